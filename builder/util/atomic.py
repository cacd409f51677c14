"""Atomic file writes: a temp file beside the final name, flushed, fsync'd and renamed into place,
so a reader sees either no file (or the previous one) or the whole new one, never a part.

General utilities: they raise plain OSError. The cache (builder/repo/cache.py) and the
content store (builder/repo/store.py) turn those into CacheError naming the path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

TEMP_PREFIX = ".tmp-"  # builder/expand/cached.py removes long-untouched `.tmp-*` leftovers


class AtomicFile:
    """A temp file in `directory` (created if needed) that becomes `dest` on `commit()`, or
    vanishes.

    Use as a context manager; leaving the block without `commit()` removes the temp file.
    `durable=False` skips the fsyncs (for files whose loss in a crash costs only a redo,
    such as verification stamps): the rename is still atomic.
    """

    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
        self.path = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "w+b")
        self.durable = durable
        self._done = False

    def commit(self, dest: Path) -> None:
        """Flush, fsync and atomically rename onto `dest` (replacing any existing file)."""
        self.file.flush()
        if self.durable:
            os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.path, 0o644)
        os.replace(self.path, dest)
        self._done = True
        if self.durable:
            fsync_dir(dest.parent)

    def abort(self) -> None:
        """Close and remove the temp file (nothing once committed or aborted)."""
        if self._done:
            return
        self._done = True
        try:
            self.file.close()  # may flush (and fail on) what a failed write left buffered
        except OSError:
            pass
        try:
            self.path.unlink()
        except OSError:  # gone already, or cannot be: a `.tmp-*` name is never read as data
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


def write_bytes(dest: Path, data: bytes | bytearray | memoryview, *,
                durable: bool = True) -> None:
    """Atomically (temp + fsync + rename) write `data` to `dest`, creating its directory."""
    with AtomicFile(dest.parent, durable=durable) as tmp:
        tmp.file.write(data)
        tmp.commit(dest)


def fsync_dir(directory: Path) -> None:
    """fsync a directory (makes a rename in it durable); best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
