"""Atomic file writes: a temporary file in the destination's folder, then a rename, so a file is whole or absent."""

import csv
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from faceinpaint.errors import InpaintError

# atomic_write's temporary files are named f".{name}.{random}{TEMPORARY_SUFFIX}" (a process killed while writing
# leaves one behind: see checkpoint.remove_stale_temporaries).
TEMPORARY_SUFFIX = ".tmp"


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable; a no-op where folders cannot be opened or synced (Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary stream; on success it replaces `path` in one rename, on failure nothing is left behind.

    The data reach the disk (fsync) before the rename, and the rename after it (fsync of the folder), so a crash
    or power cut leaves the old file or the new one, never an empty or partial one under the final name. The
    file gets the usual permissions (0666 less the umask), not the private ones of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically; an OSError becomes a one-line InpaintError naming the file."""
    try:
        with atomic_write(path) as stream:
            stream.write(text.encode("utf-8"))
    except OSError as error:
        raise InpaintError(f"output {path}: cannot write it ({error.strerror or error})") from None


def write_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write dict rows as CSV atomically (columns: every key, in first-seen order); nothing for no rows."""
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(key for row in rows for key in row)),
                            lineterminator="\n")  # fmt: skip
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
