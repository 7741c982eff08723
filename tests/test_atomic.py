"""atomic_write: whole or absent, synced to disk before and after the rename, the usual permissions."""

import os
import stat

import pytest

from faceinpaint.atomic import atomic_write, write_csv, write_text
from faceinpaint.errors import InpaintError


def test_the_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    target, calls, real_fsync = tmp_path / "out.bin", [], os.fsync

    def fsync(handle):
        kind = "folder" if stat.S_ISDIR(os.fstat(handle).st_mode) else "file"
        calls.append((kind, target.exists()))
        real_fsync(handle)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_write(target) as stream:
        stream.write(b"data")
    assert calls == [("file", False), ("folder", True)]
    assert target.read_bytes() == b"data"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as stream:
        stream.write(b"new, half written")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_the_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "out.bin") as stream:
            stream.write(b"data")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o644


def test_text_and_csv_writers(tmp_path):
    """The one atomic text writer (lists, results, study tables) and its CSV form; an unwritable path is a
    one-line InpaintError naming it, and no rows write no file."""
    write_text(tmp_path / "a.txt", "één\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "één\n"
    write_csv(tmp_path / "t.csv", [{"a": 1, "b": 2}, {"a": 3, "c": 4}])
    assert (tmp_path / "t.csv").read_text() == "a,b,c\n1,2,\n3,,4\n"
    write_csv(tmp_path / "none.csv", [])
    assert not (tmp_path / "none.csv").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InpaintError, match="file/b.txt: cannot write it"):
        write_text(tmp_path / "file" / "b.txt", "y")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt", "file", "t.csv"]
