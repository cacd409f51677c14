"""The `layer` stage: walk the image root in apko's order and write the uncompressed layer tar
with Go `archive/tar` encoding; its SHA-256 is the diffID.

Interface: `layer(fs, out_path) -> LayerResult`.

Header rules (apko-notes §1.9): name without leading `/` or trailing `/`; mode = permission
and special bits; owner from the side table (0:0 for package content); uname/gname looked up
in the image's own `/etc/passwd` and `/etc/group`; hardlinks as TypeLink with size 0;
character devices with their numbers; xattrs only on files and directories.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.fsroot import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, FsRoot, Meta
from builder.gotar import (
    TYPE_BLOCK,
    TYPE_CHAR,
    TYPE_DIR,
    TYPE_FIFO,
    TYPE_LINK,
    TYPE_REG,
    TYPE_SYMLINK,
    TarHeader,
    TarWriter,
)

_TYPES = {DIR: TYPE_DIR, FILE: TYPE_REG, SYMLINK: TYPE_SYMLINK, HARDLINK: TYPE_LINK,
          CHAR: TYPE_CHAR, BLOCK: TYPE_BLOCK, FIFO: TYPE_FIFO}


@dataclass
class LayerResult:
    path: Path
    diff_id: str  # "sha256:<hex>"
    size: int
    entries: int


class _HashingWriter:
    """File wrapper that hashes what is written (the diffID is computed while writing)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, b: bytes | bytearray | memoryview) -> int:
        self.h.update(b)
        self.size += len(b)
        return self.f.write(b)


def _names(fs: FsRoot, path: str) -> dict[int, str]:
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
    h = TarHeader(name=path, type=_TYPES[m.kind], mode=m.mode, uid=m.uid, gid=m.gid,
                  mtime=m.mtime, uname=users.get(m.uid, ""), gname=groups.get(m.gid, ""))
    if m.kind == FILE:
        h.size = m.size
    if m.kind in (SYMLINK, HARDLINK):
        h.linkname = m.linkname
    if m.kind in (CHAR, BLOCK):
        h.devmajor, h.devminor = m.devmajor, m.devminor
    if m.kind in (FILE, DIR) and m.xattrs:
        h.xattrs = dict(m.xattrs)
    return h


def layer_reference(fs: FsRoot, out_path: Path) -> LayerResult:
    users = _names(fs, "etc/passwd")
    groups = _names(fs, "etc/group")
    count = 0
    with open(out_path, "wb") as raw:
        hw = _HashingWriter(raw)
        tw = TarWriter(hw)  # type: ignore[arg-type]
        for path, m in fs.walk():
            h = header_for(path, m, users, groups)
            if m.kind == FILE and m.size:
                with fs.open(path) as src:
                    tw.add(h, src)
            else:
                tw.add(h)
            count += 1
        tw.close()
    return LayerResult(out_path, "sha256:" + hw.h.hexdigest(), hw.size, count)


IMPLEMENTATIONS: dict[str, Callable[[FsRoot, Path], LayerResult]] = {
    "reference": layer_reference,
}
