"""Atomic file writes: a temp file beside the final name, flushed, fsync'd and renamed into place,
so a reader sees either no file (or the previous one) or the whole new one, never a part.

General utilities: they raise plain OSError. The cache (builder/repo/cache.py) and the
content store (builder/repo/store.py) turn those into CacheError naming the path.

Leftovers of killed writers: a temp file is flock(2)ed by its writer from creation until it is
renamed into place (the rename happens before the file is closed), so a `.tmp-*` file that
nobody holds a lock on, and that has not been written for `STALE_SECONDS`, belongs to a
process that died (kill -9, power loss). Creating an AtomicFile removes such files from its
directory first (`remove_stale_temps`): whoever writes into a directory next clears what dead
writers left there. A `.tmp-*` name is never read as data, so a leftover only costs space.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from builder import faults

TEMP_PREFIX = ".tmp-"
# An unlocked temp file untouched this long is a dead writer's (the only unlocked moment of
# a live one is between mkstemp and flock, microseconds).
STALE_SECONDS = 1.0


class AtomicFile:
    """A temp file in `directory` (created if needed) that becomes `dest` on `commit()`, or
    vanishes.

    Use as a context manager; leaving the block without `commit()` removes the temp file.
    `durable=False` skips the fsyncs (for files whose loss in a crash costs only a redo,
    such as verification stamps): the rename is still atomic.
    """

    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(directory)
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
        self.path = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "w+b")
        try:  # held until the rename: the mark of a live writer (remove_stale_temps)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # no flock here: then no cleaner can lock it either
            pass
        self.durable = durable
        self._done = False

    def commit(self, dest: Path) -> None:
        """Flush, fsync and atomically rename onto `dest` (replacing any existing file)."""
        self.file.flush()
        fd = self.file.fileno()
        if self.durable:
            os.fsync(fd)
        os.fchmod(fd, 0o644)
        faults.point()  # crash tests: die with the whole temp file not yet renamed
        os.replace(self.path, dest)  # before closing: the lock is held until the rename
        self._done = True
        self.file.close()
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


def remove_stale_temps(directory: Path) -> int:
    """Delete the `.tmp-*` files of `directory` that dead writers left (unlocked and untouched
    for `STALE_SECONDS`); returns how many. Best effort: what cannot be checked stays."""
    removed = 0
    now = time.time()
    try:
        names = [e.name for e in os.scandir(directory) if e.name.startswith(TEMP_PREFIX)]
    except OSError:
        return 0
    for name in names:
        path = directory / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if now - os.fstat(fd).st_mtime < STALE_SECONDS:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer lives
            os.unlink(path)
            removed += 1
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


WORK_LOCK = ".apkimage-work.lock"


@contextmanager
def work_directory(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh directory `parent/<prefix>XXXX` for one process's work, removed when the block
    exits. A lock file in it is flock(2)ed while the process lives, so the next call with
    the same `prefix` first removes the directories dead processes left (a build killed with
    -9 leaves its layer tars there); live ones stay."""
    remove_stale_work_dirs(parent, prefix)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    fd = -1
    try:
        fd = os.open(path / WORK_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass
        yield path
    finally:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_work_dirs(parent: Path, prefix: str) -> int:
    """Remove `parent/<prefix>*` directories whose lock nobody holds (see `work_directory`);
    a directory without the lock file is left alone. Returns how many went."""
    removed = 0
    try:
        names = [e.name for e in os.scandir(parent)
                 if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    for name in names:
        try:
            fd = os.open(parent / name / WORK_LOCK, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        shutil.rmtree(parent / name, ignore_errors=True)
        os.close(fd)
        removed += 1
    return removed


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


def copy_file_into(src: Path, dst: BinaryIO) -> int:
    """Append the whole of file `src` to the open file `dst` by the kernel (sendfile, else
    copy_file_range: no trip through this process's memory), else by reads and writes.
    Returns the bytes copied. (sendfile first: on tmpfs it costs ~20 % less CPU a byte.)"""
    dst.flush()
    out = dst.fileno()
    with open(src, "rb") as f:
        fd = f.fileno()
        total = 0
        for kernel_copy in (_sendfile, _copy_range):
            try:
                while n := kernel_copy(out, fd, total):
                    total += n
                return total
            except OSError as exc:
                if total or exc.errno not in _NO_KERNEL_COPY:
                    raise
        f.seek(0)
        shutil.copyfileobj(f, dst, 1 << 20)
        return f.tell()


_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


def _copy_range(out: int, fd: int, offset: int) -> int:
    return os.copy_file_range(fd, out, 1 << 30, offset)


def _sendfile(out: int, fd: int, offset: int) -> int:
    return os.sendfile(out, fd, offset, 1 << 30)
