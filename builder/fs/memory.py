"""The fast build's image filesystem: the same path rules and metadata as the reference
(`builder.fs.model.FsModel`), but nothing is written anywhere. A regular file is an `Extent` of
the package's cached, decompressed data tar (path, offset, size) or the bytes the builder
made; directories, links and device nodes exist only in the metadata table. The layer stage
streams file bytes straight from the data tars.
"""

from __future__ import annotations

from collections.abc import Iterator

from builder.errors import FormatError
from builder.fs.extent import Content, Extent
from builder.fs.kinds import DIR, HARDLINK
from builder.fs.model import FsModel, Meta, name_key


class MemFs(FsModel):
    """An in-memory image filesystem whose file nodes point into package data tars."""

    uses_fileobj = False  # nothing is copied at install time

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, Content] = {}

    def _store_dir(self, canonical: str) -> None:
        pass

    def _store_file(self, canonical: str, data: bytes | Extent) -> int:
        if isinstance(data, Extent):  # install passes no handle here (uses_fileobj)
            self.data[canonical] = data
            return data.size
        raw = bytes(data)
        self.data[canonical] = raw
        return len(raw)

    def _store_symlink(self, canonical: str, target: str) -> None:
        pass

    def _store_hardlink(self, canonical: str, target: str) -> None:
        pass

    def _store_node(self, canonical: str) -> None:
        pass

    def _store_remove(self, canonical: str, kind: str) -> None:
        self.data.pop(canonical, None)
        if kind == DIR:
            prefix = canonical + "/"
            for k in [k for k in self.data if k.startswith(prefix)]:
                del self.data[k]

    def content(self, canonical: str) -> Content:
        m = self.meta[canonical]
        target = m.linkname if m.kind == HARDLINK else canonical
        try:
            return self.data[target]
        except KeyError:
            raise FormatError(f"builder: {canonical!r}: no file content at {target!r}") from None

    def walk(self) -> Iterator[tuple[str, Meta]]:
        children: dict[str, list[str]] = {}
        for path in self.meta:
            parent, _, name = path.rpartition("/")
            children.setdefault(parent, []).append(name)
        for names in children.values():
            names.sort(key=name_key)
        meta = self.meta
        stack: list[tuple[str, Iterator[str]]] = [("", iter(children.get("", ())))]
        while stack:
            rel, it = stack[-1]
            child = next(it, None)
            if child is None:
                stack.pop()
                continue
            path = f"{rel}/{child}" if rel else child
            m = meta[path]
            yield path, m
            if m.kind == DIR:
                stack.append((path, iter(children.get(path, ()))))
