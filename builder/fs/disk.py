"""The reference filesystem storage: a temporary root directory on disk; contents are
written on install and read back by the layer walk, which lists the disk."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from builder.errors import FormatError
from builder.fs.extent import Content, Extent
from builder.fs.kinds import DIR, HARDLINK
from builder.fs.model import FsModel, Meta, name_key

_COPY = 1 << 20


def _read_chunks(reader: BinaryIO, size: int | None) -> Iterator[bytes]:
    """`reader`'s bytes in pieces of up to 1 MiB: `size` of them, or all when None (fewer
    if it ends first)."""
    remaining = size if size is not None else -1
    while remaining != 0:
        chunk = reader.read(_COPY if remaining < 0 else min(remaining, _COPY))
        if not chunk:
            return
        yield chunk
        if remaining > 0:
            remaining -= len(chunk)


class FsRoot(FsModel):
    """The reference storage: a temporary on-disk root; the walk lists the disk."""

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def disk(self, canonical: str) -> Path:
        return self.root / canonical if canonical else self.root

    def _store_dir(self, canonical: str) -> None:
        self.disk(canonical).mkdir()

    def _store_file(self, canonical: str, data: bytes | Extent) -> int:
        with open(self.disk(canonical), "wb") as f:
            if not isinstance(data, Extent):
                f.write(data)
                return len(data)
            src = data.fileobj or open(data.path, "rb")  # noqa: SIM115 - closed below
            try:
                src.seek(data.offset)
                written = 0
                for chunk in _read_chunks(src, data.size):
                    f.write(chunk)
                    written += len(chunk)
                return written
            finally:
                if data.fileobj is None:
                    src.close()

    def _store_symlink(self, canonical: str, target: str) -> None:
        os.symlink(target, self.disk(canonical))

    def _store_hardlink(self, canonical: str, target: str) -> None:
        os.link(self.disk(target), self.disk(canonical))

    def _store_node(self, canonical: str) -> None:
        self.disk(canonical).touch()  # a placeholder; the truth is in the table

    def _store_remove(self, canonical: str, kind: str) -> None:
        p = self.disk(canonical)
        if p.is_symlink() or p.exists():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def content(self, canonical: str) -> Content:
        m = self.meta[canonical]
        c = m.linkname if m.kind == HARDLINK else canonical
        return Extent(self.disk(c), 0, self.meta[c].size)

    def read(self, path: str) -> bytes:
        c, m = self._file_meta(path)
        return self.disk(m.linkname if m.kind == HARDLINK else c).read_bytes()

    def open(self, canonical: str) -> BinaryIO:
        m = self.meta[canonical]
        return open(self.disk(m.linkname if m.kind == HARDLINK else canonical), "rb")

    def walk(self) -> Iterator[tuple[str, Meta]]:
        """Listed from the disk; metadata from the table (an entry on disk without metadata
        is a builder bug and raises)."""
        stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = []

        def children(rel: str) -> Iterator[os.DirEntry[str]]:
            with os.scandir(self.disk(rel)) as it:
                entries = list(it)
            entries.sort(key=lambda e: name_key(e.name))
            return iter(entries)

        stack.append(("", children("")))
        while stack:
            rel, it = stack[-1]
            entry = next(it, None)
            if entry is None:
                stack.pop()
                continue
            path = f"{rel}/{entry.name}" if rel else entry.name
            m = self.meta.get(path)
            if m is None:
                raise FormatError(f"builder: {path!r} is on disk but has no metadata")
            yield path, m
            if m.kind == DIR and entry.is_dir(follow_symlinks=False):
                stack.append((path, children(path)))
