"""Results worked out from files, kept for the rest of this process while the files are
unchanged: a long process (build-many, a Dask worker) building many images from one cache
reads, parses and checks the same package files and cache artefacts for every image.

A result is keyed by what it was computed for and by the identity (device, inode, size,
mtime_ns, ctime_ns) of every file it was computed from. It is only kept when each of those
files last changed at least `SETTLE_NS` before the computation began, the rule the
verification stamps follow (builder/repo/stamp.py explains it: a write within one timestamp
tick of the last one could leave the identity unchanged), so any later change to the bytes
gives another identity and the memo misses. What the memo cannot see, like the stamps:
damage below the filesystem. A memo holds at most `limit` results; past that it starts afresh.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable, Sequence
from typing import Generic, NamedTuple, TypeVar

from builder.repo.stamp import SETTLE_NS

T = TypeVar("T")
Identity = tuple[int, int, int, int, int]


def _identities(paths: Sequence[str | os.PathLike[str]]) -> tuple[Identity, ...] | None:
    try:
        return tuple((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                     for st in map(os.stat, paths))
    except OSError:
        return None


class Snapshot(NamedTuple):
    """The files of one memo lookup as they were when it began (`put` takes it back)."""

    key: Hashable
    paths: tuple[str | os.PathLike[str], ...]
    files: tuple[Identity, ...] | None
    started_ns: int


class FileMemo(Generic[T]):
    """Results by (key, identities of the files they came from)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._items: dict[tuple[Hashable, tuple[Identity, ...]], T] = {}

    def get(self, key: Hashable, paths: Sequence[str | os.PathLike[str]]
            ) -> tuple[T | None, Snapshot]:
        """The result kept for `key` computed from `paths` as they are now (None if none),
        and the snapshot to `put` a freshly computed one with."""
        snap = Snapshot(key, tuple(paths), _identities(paths), time.time_ns())
        if snap.files is None:
            return None, snap
        return self._items.get((key, snap.files)), snap

    def put(self, snap: Snapshot, value: T) -> None:
        """Keep `value`, computed after `get` gave `snap`, if its files are unchanged since
        and each had settled (last changed `SETTLE_NS` before the lookup)."""
        files = snap.files
        if files is None or any(f[4] + SETTLE_NS > snap.started_ns for f in files):
            return
        if _identities(snap.paths) != files:
            return
        if len(self._items) >= self.limit:
            self._items.clear()
        self._items[(snap.key, files)] = value
