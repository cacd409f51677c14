"""The `layer` stage: walk the image root in apko's order and write the uncompressed layer tar
with Go `archive/tar` encoding; its SHA-256 is the diffID.

Interface: `layer(fs, out_path) -> LayerResult`. An implementation with the attribute
`streams = True` also accepts `sink=` (a `builder.gzsink.GzipSink`) and then writes the tar
into it instead of a file (`out_path` None, `LayerResult.path` None).

An implementation with `fused = True` writes the compressed blob itself (see
`layer_stitched`); the pipeline then skips the compress stage's work.

Implementations: `reference` (TarWriter over the walk, file bytes read through the model);
`fast` (the same bytes, assembled in fresh 1 MiB blocks: headers encoded in place, file
bytes copied with `preadv` straight from the package data tars — each opened once — the
diffID hashed block by block, each block handed to the compressor's worker threads or
written to `out_path`; the layer is never held in memory); `stitched` (another layer format:
package-ordered, stitched from the packages' own compressed bytes — same tree, other bytes).

Header rules (apko-notes §1.9): name without leading `/` or trailing `/`; mode = permission
and special bits; owner from the side table (0:0 for package content); uname/gname looked up
in the image's own `/etc/passwd` and `/etc/group`; hardlinks as TypeLink with size 0;
character devices with their numbers; xattrs only on files and directories.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from builder.errors import FormatError
from builder.fsroot import (
    BLOCK,
    CHAR,
    DIR,
    FIFO,
    FILE,
    HARDLINK,
    SYMLINK,
    Extent,
    FsModel,
    Meta,
)
from builder.gotar import (
    END_MARKER,
    TYPE_BLOCK,
    TYPE_CHAR,
    TYPE_DIR,
    TYPE_FIFO,
    TYPE_LINK,
    TYPE_REG,
    TYPE_SYMLINK,
    TarHeader,
    TarWriter,
    encode_header,
    padding,
)

_TYPES = {DIR: TYPE_DIR, FILE: TYPE_REG, SYMLINK: TYPE_SYMLINK, HARDLINK: TYPE_LINK,
          CHAR: TYPE_CHAR, BLOCK: TYPE_BLOCK, FIFO: TYPE_FIFO}


@dataclass
class LayerResult:
    path: Path | None  # None when the tar was streamed into a compressor
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


def _names(fs: FsModel, path: str) -> dict[int, str]:
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
            head = first.get(m.linkname)
            if head is None:
                first[m.linkname] = path
                m = dataclasses.replace(fs.meta[m.linkname], package=m.package)
            elif head != m.linkname:
                m = dataclasses.replace(m, linkname=head)
        yield path, m


def layer_reference(fs: FsModel, out_path: Path) -> LayerResult:
    users = _names(fs, "etc/passwd")
    groups = _names(fs, "etc/group")
    count = 0
    with open(out_path, "wb") as raw:
        hw = _HashingWriter(raw)
        tw = TarWriter(hw)  # type: ignore[arg-type]
        for path, m in layer_walk(fs):
            h = header_for(path, m, users, groups)
            if m.kind == FILE and m.size:
                with fs.open(path) as src:
                    tw.add(h, src)
            else:
                tw.add(h)
            count += 1
        tw.close()
    return LayerResult(out_path, "sha256:" + hw.h.hexdigest(), hw.size, count)


FAST_BLOCK = 1 << 20  # = the compressors' unit, so blocks are handed over without copies
_MAX_OPEN = 256


class _BlockStream:
    """Assembles the tar in fresh FAST_BLOCK-sized buffers; full ones are hashed (diffID)
    and handed to `emit`."""

    def __init__(self, emit: Callable[[bytearray], Any],
                 reuse: Callable[[], bytearray | None]) -> None:
        self._emit = emit
        self._reuse = reuse  # a buffer the consumer is done with, or None
        self.hash = hashlib.sha256()
        self.size = 0
        self._buf = bytearray(FAST_BLOCK)
        self._view = memoryview(self._buf)
        self._pos = 0
        self._fds: dict[Path, int] = {}

    def _flush(self) -> None:
        self._view.release()
        buf = self._buf
        if self._pos < FAST_BLOCK:
            del buf[self._pos:]
        self.hash.update(buf)
        self.size += len(buf)
        self._emit(buf)
        self._buf = self._reuse() or bytearray(FAST_BLOCK)
        self._view = memoryview(self._buf)
        self._pos = 0

    def put(self, data: bytes) -> None:
        n = len(data)
        pos = self._pos
        if pos + n < FAST_BLOCK:
            self._view[pos:pos + n] = data
            self._pos = pos + n
            return
        done = 0
        while done < n:
            take = min(n - done, FAST_BLOCK - self._pos)
            self._view[self._pos:self._pos + take] = data[done:done + take]
            self._pos += take
            done += take
            if self._pos == FAST_BLOCK:
                self._flush()

    def copy(self, ext: Extent, who: str) -> None:
        """Append `ext.size` bytes read from its file (straight into the block buffer)."""
        fd = self._fds.get(ext.path)
        if fd is None:
            if len(self._fds) >= _MAX_OPEN:
                self.close_files()
            fd = self._fds[ext.path] = os.open(ext.path, os.O_RDONLY)
        off, remaining = ext.offset, ext.size
        while remaining:
            take = min(remaining, FAST_BLOCK - self._pos)
            got = os.preadv(fd, [self._view[self._pos:self._pos + take]], off)
            if got <= 0:
                raise FormatError(f"{who}: {ext.path} ends at byte {off}, expected "
                                  f"{remaining} more bytes of content")
            self._pos += got
            off += got
            remaining -= got
            if self._pos == FAST_BLOCK:
                self._flush()

    def finish(self) -> None:
        if self._pos:
            self._flush()
        self._view.release()
        self.close_files()

    def close_files(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def layer_fast(fs: FsModel, out_path: Path | None, *, sink: Any = None) -> LayerResult:
    """The reference's tar bytes from one walk of the model, streamed block by block."""
    if (sink is None) == (out_path is None):
        raise ValueError("layer_fast: give exactly one of out_path and sink")
    users = _names(fs, "etc/passwd")
    groups = _names(fs, "etc/group")
    if out_path is not None:
        out = open(out_path, "wb")  # noqa: SIM115 - closed below
        spare: list[bytearray] = []

        def to_file(buf: bytearray) -> None:
            out.write(buf)
            spare.append(buf)

        stream = _BlockStream(to_file, lambda: spare.pop() if spare else None)
    else:
        out = None
        stream = _BlockStream(sink.write, sink.reusable_buffer)
    count = 0
    try:
        put = stream.put
        for path, m in layer_walk(fs):
            put(encode_header(header_for(path, m, users, groups)))
            count += 1
            if m.kind != FILE or not m.size:
                continue
            data = fs.content(path)
            if isinstance(data, Extent):
                if data.size != m.size:
                    raise FormatError(f"builder: {path!r}: {data.size} bytes stored, "
                                      f"{m.size} in its header")
                stream.copy(data, path)
            else:
                if len(data) != m.size:
                    raise FormatError(f"builder: {path!r}: {len(data)} bytes stored, "
                                      f"{m.size} in its header")
                put(data)
            put(padding(m.size))
        put(END_MARKER)
        stream.finish()
    finally:
        stream.close_files()
        if out is not None:
            out.close()
    return LayerResult(out_path, "sha256:" + stream.hash.hexdigest(), stream.size, count)


layer_fast.streams = True  # type: ignore[attr-defined]


# What compresses the bytes the stitched layer does not reuse (pinned: part of its bytes).
STITCH_ENGINE, STITCH_LEVEL = "isal", 2


def layer_stitched(fs: FsModel, out_gz: Path, *, packages: list[Any]
                   ) -> tuple[LayerResult, Any]:
    """The `stitched` layer format (builder/stitched.py): writes the gzip blob itself from the
    packages' own DEFLATE blocks, so layer and compression are one step. Returns the layer
    result and the `builder.stitched.StitchResult` (blob digest, reuse statistics)."""
    from builder.stitched import stitch_layer

    res = stitch_layer(fs, packages, out_gz, _names(fs, "etc/passwd"),
                       _names(fs, "etc/group"), STITCH_ENGINE, STITCH_LEVEL)
    entries = (res.stats.entries_kept + res.stats.entries_rewritten + res.stats.final_entries)
    return LayerResult(None, res.diff_id, res.size, entries), res


layer_stitched.fused = True  # type: ignore[attr-defined]

IMPLEMENTATIONS: dict[str, Callable[..., Any]] = {
    "reference": layer_reference,
    "fast": layer_fast,
    "stitched": layer_stitched,
}
FAST = "fast"
