"""apko's `layering: {strategy: origin, budget: N}`: which packages share a layer, and which
tar entries each layer holds (apko's pkg/build/layers.go, as its behaviour is described in
the project's notes; no multi-layer golden exists upstream, so this follows that behaviour).

Groups: packages of one `origin` share a group; a package whose `replaces` names an installed
package (and the constraint holds for its version) joins that package's group. Groups are
ordered by installed size (largest first; ties by the greatest package name in the group,
byte order); with more groups than `budget`, the `budget - 1` largest keep a layer each and
the rest are merged into one layer after them. Layers bottom to top: the groups, then the top
layer with everything no package owns — every directory, device nodes, what the builder wrote
(accounts, etc/apk/*, etc/apko.json, the apk database files).

Entries: the image walk (the sorted layer's order) is split by owner. A package layer gets the
ancestor directories of its entries re-emitted once each, with the directory's own header but
the mtime of the entry that needed them; which ancestors is apko's "stack" rule — the stack of
open directories is only popped when a directory is walked, so a file after a subtree can
bring that subtree's last directory into its layer too. Each package layer ends its
`usr/lib/apk/db` part with a partial `installed` holding only its packages' records (apko
#1752), written right after the walk reaches the full one.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from builder.apk.model import Package
from builder.apk.version import parse_constraint
from builder.errors import FormatError
from builder.fs.kinds import DIR
from builder.fs.model import Meta

INSTALLED = "usr/lib/apk/db/installed"
DB_DIRS = ("usr", "usr/lib", "usr/lib/apk", "usr/lib/apk/db")


@dataclass(frozen=True)
class LayerGroup:
    """The packages of one package layer (names sorted), their installed size and the
    tie-breaker apko sorts equal sizes by (the greatest name)."""

    packages: tuple[str, ...]
    size: int

    @property
    def tiebreaker(self) -> str:
        return max(self.packages)


@dataclass(frozen=True)
class LayerEntry:
    """One tar entry of a layer; `content` replaces the model's bytes (the partial db)."""

    path: str
    meta: Meta
    content: bytes | None = None


def group_by_origin(packages: Sequence[Package], budget: int) -> list[LayerGroup]:
    """The package layers, bottom first."""
    group_of: dict[str, int] = {}  # package name -> group id
    members: dict[int, list[Package]] = {}
    by_origin: dict[str, int] = {}
    for pkg in packages:
        gid = by_origin.setdefault(pkg.origin, len(by_origin))
        group_of[pkg.name] = gid
        members.setdefault(gid, []).append(pkg)
    by_name = {p.name: p for p in packages}
    for pkg in packages:
        for text in pkg.replaces:
            try:
                c = parse_constraint(text)
            except FormatError as exc:
                raise FormatError(f"package {pkg.name}: replaces: {exc}") from None
            other = by_name.get(c.name)
            if other is None or (c.op and not c.matches(other.version)):
                continue
            mine, theirs = group_of[pkg.name], group_of[other.name]
            if mine == theirs:
                continue
            for p in members.pop(theirs):
                group_of[p.name] = mine
                members[mine].append(p)
    groups = [LayerGroup(tuple(sorted(p.name for p in ps)), sum(p.installed_size for p in ps))
              for ps in members.values()]
    groups.sort(key=lambda g: (-g.size, g.tiebreaker.encode()))
    if len(groups) > budget:
        cut = max(budget - 1, 0)
        rest = groups[cut:]
        merged = LayerGroup(tuple(sorted(n for g in rest for n in g.packages)),
                            sum(g.size for g in rest))
        groups = [*groups[:cut], merged]
    return groups


class _Open:
    """A directory on the walk's stack (compared by identity, as apko compares headers)."""

    __slots__ = ("path", "meta")

    def __init__(self, path: str, meta: Meta) -> None:
        self.path, self.meta = path, meta


def _align(mine: list[_Open], main: list[_Open]) -> list[_Open]:
    """Make a layer's stack of written directories agree with the walk's; the directories
    the layer has not written yet."""
    i = 0
    while i < len(mine) and i < len(main) and mine[i] is main[i]:
        i += 1
    del mine[i:]
    new = main[i:]
    mine.extend(new)
    return new


def _with_mtime(m: Meta, mtime: int) -> Meta:
    """`m` with another mtime (`dataclasses.replace`, without its per-call field walk)."""
    return Meta(m.kind, m.mode, m.uid, m.gid, mtime, m.linkname, m.devmajor, m.devminor,
                m.size, m.xattrs, m.package, m.checksum)


def split_entries(walk: Iterable[tuple[str, Meta]], groups: Sequence[LayerGroup],
                  partial_db: dict[str, bytes]) -> list[list[LayerEntry]]:
    """The entries of each layer, bottom to top: one list per group, then the top layer.
    `partial_db` holds each package's record as written in the full `installed`."""
    owner = {name: i for i, g in enumerate(groups) for name in g.packages}
    top = len(groups)
    layers: list[list[LayerEntry]] = [[] for _ in range(top + 1)]
    stacks: list[list[_Open]] = [[] for _ in range(top + 1)]
    main: list[_Open] = []
    for path, m in walk:
        item = None
        if m.kind == DIR:
            parent = posixpath.dirname(path)
            while main and main[-1].path != parent:
                main.pop()
            item = _Open(path, m)
            main.append(item)
            where = top
        else:
            where = owner.get(m.package, top)
        out = layers[where]
        for d in _align(stacks[where], main):
            if d is not item:
                out.append(LayerEntry(d.path, _with_mtime(d.meta, m.mtime)))
        out.append(LayerEntry(path, m))
        if path == INSTALLED:
            for i, g in enumerate(groups):
                for d in _align(stacks[i], main):
                    layers[i].append(LayerEntry(d.path, _with_mtime(d.meta, m.mtime)))
                db = b"".join(partial_db.get(name, b"") for name in g.packages)
                layers[i].append(LayerEntry(path, dataclasses.replace(m, size=len(db)), db))
    return layers


@dataclass(frozen=True)
class LayerPart:
    """Layer `index` of a layered image: for the sorted format its entries; for a format of
    its own (stitched) the groups and each package's installed-db record, to build it from."""

    index: int
    groups: tuple[LayerGroup, ...]  # every package layer of the image, bottom first
    entries: tuple[LayerEntry, ...]
    partial_db: Mapping[str, bytes]

    @property
    def group(self) -> LayerGroup | None:
        """This layer's packages; None for the top layer."""
        return self.groups[self.index] if self.index < len(self.groups) else None


def layer_parts(walk: Iterable[tuple[str, Meta]], groups: Sequence[LayerGroup],
                partial_db: Mapping[str, bytes]) -> list[LayerPart]:
    """Every layer of the image, bottom first: the package layers, then the top layer."""
    split = split_entries(walk, groups, dict(partial_db))
    return [LayerPart(i, tuple(groups), tuple(entries), partial_db)
            for i, entries in enumerate(split)]


def db_entries(meta: Mapping[str, Meta], group: LayerGroup,
               partial_db: Mapping[str, bytes]) -> list[LayerEntry]:
    """A package layer's partial installed db with all its directories (mtime = the db's),
    for layer formats that do not follow the sorted walk."""
    m = meta[INSTALLED]
    db = b"".join(partial_db.get(name, b"") for name in group.packages)
    return [*(LayerEntry(d, dataclasses.replace(meta[d], mtime=m.mtime)) for d in DB_DIRS),
            LayerEntry(INSTALLED, dataclasses.replace(m, size=len(db)), db)]
