"""Atomic file writes: a temporary file in the destination's folder, then a rename, so a file is whole or absent."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

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
