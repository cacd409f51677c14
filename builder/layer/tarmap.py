"""How the image filesystem model maps to tar entries: the walk the layer records and the
header of each node (apko-notes §1.9). Shared by every layer format.

Header rules: name without leading `/` or trailing `/`; mode = permission and special bits;
owner from the model (0:0 for package content); uname/gname looked up in the image's own
`/etc/passwd` and `/etc/group`; hardlinks as TypeLink with size 0; character devices with
their numbers; xattrs only on files and directories.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from builder.fs.kinds import BLOCK, CHAR, DIR, FILE, HARDLINK, SYMLINK, TYPEFLAG_OF_KIND
from builder.fs.model import FsModel, Meta
from builder.gotar import TarHeader


def image_names(fs: FsModel, path: str) -> dict[int, str]:
    """uid/gid -> name from an image passwd/group file (first entry wins)."""
    out: dict[int, str] = {}
    m = fs.get(path)
    if m is None or m.kind not in (FILE, HARDLINK):
        return out
    for line in fs.read(path).decode("utf-8", "replace").splitlines():
        f = line.split(":")
        if len(f) >= 3 and f[2].isdigit():
            out.setdefault(int(f[2]), f[0])
    return out


def header_for(path: str, m: Meta, users: dict[int, str],
               groups: dict[int, str]) -> TarHeader:
    h = TarHeader(name=path, type=TYPEFLAG_OF_KIND[m.kind], mode=m.mode, uid=m.uid, gid=m.gid,
                  mtime=m.mtime, uname=users.get(m.uid, ""), gname=groups.get(m.gid, ""))
    if m.kind == FILE:
        h.size = m.size
    if m.kind in (SYMLINK, HARDLINK):
        h.linkname = m.linkname
    if m.kind in (CHAR, BLOCK):
        h.devmajor, h.devminor = m.devmajor, m.devminor
    if m.kind in (FILE, DIR) and m.xattrs:
        h.xattrs = {k: v for k, v in m.xattrs.items()}  # a copy, typed as TarHeader's
    return h


def layer_walk(fs: FsModel, already: Iterable[str] = (),
               walk: Iterable[tuple[str, Meta]] | None = None) -> Iterator[tuple[str, Meta]]:
    """The sorted walk as the layer records it.

    One deliberate difference from apko: apko writes every hardlink as a TypeLink to its
    target, even when the link sorts before the target — a tar no unpacker can extract (the
    link's target does not exist yet). Here the first path of a group of hardlinked paths
    in walk order carries the content (with the target's metadata) and every later one links
    to it. When the target sorts first — the usual case — the bytes are apko's. `already`
    names regular files written earlier in the same tar (the stitched format's package
    streams), which keep their content; `walk` replaces `fs.walk()` with a part of it."""
    first: dict[str, str] = {p: p for p in already}
    for path, m in (fs.walk() if walk is None else walk):
        if m.kind == FILE:
            head = first.setdefault(path, path)
            if head != path:
                m = dataclasses.replace(m, kind=HARDLINK, linkname=head, size=0)
        elif m.kind == HARDLINK:
            link_head = first.get(m.linkname)
            if link_head is None:
                first[m.linkname] = path
                m = dataclasses.replace(fs.meta[m.linkname], package=m.package)
            elif link_head != m.linkname:
                m = dataclasses.replace(m, linkname=link_head)
        yield path, m
