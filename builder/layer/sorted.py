"""The `sorted` layer format: the image tree in apko's order (names byte-sorted per directory,
each directory before its contents) as a Go `archive/tar` stream — apko's layer tar, byte for
byte. Its SHA-256 is the diffID.

Two writers of the same bytes: `write_sorted_reference` (TarWriter over the walk, file bytes
read through the model, the tar written to a file) and `write_sorted_fast` (the tar assembled
in fresh 1 MiB blocks: headers encoded in place, file bytes copied with `preadv` straight from
the package data tars — each opened once — the diffID hashed block by block, each block
handed to the compressor's sink or written to a file; the layer is never held in memory).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from builder.errors import FormatError
from builder.fs.extent import Extent
from builder.fs.kinds import FILE
from builder.fs.model import FsModel, Meta
from builder.gotar import END_MARKER, TarWriter, encode_header, padding
from builder.layer.tarmap import header_for, image_names, layer_walk
from builder.layering import LayerEntry
from builder.stages.base import LayerResult, Sink


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


def _entries(fs: FsModel, part: Sequence[LayerEntry] | None
             ) -> Iterable[tuple[str, Meta, bytes | None]]:
    """The whole tree's walk, or one layer's entries of a layered image."""
    if part is None:
        return ((path, m, None) for path, m in layer_walk(fs))
    return ((e.path, e.meta, e.content) for e in part)


def write_sorted_reference(fs: FsModel, out_path: Path,
                           part: Sequence[LayerEntry] | None = None) -> LayerResult:
    users = image_names(fs, "etc/passwd")
    groups = image_names(fs, "etc/group")
    count = 0
    with open(out_path, "wb") as raw:
        hw = _HashingWriter(raw)
        tw = TarWriter(hw)
        for path, m, content in _entries(fs, part):
            h = header_for(path, m, users, groups)
            if content is not None:
                tw.add(h, io.BytesIO(content))
            elif m.kind == FILE and m.size:
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


def write_sorted_fast(fs: FsModel, out_path: Path | None, *, sink: Sink | None = None,
                      entries: Sequence[LayerEntry] | None = None) -> LayerResult:
    """The reference's tar bytes from one walk of the model, streamed block by block."""
    if (sink is None) == (out_path is None):
        raise ValueError("write_sorted_fast: give exactly one of out_path and sink")
    users = image_names(fs, "etc/passwd")
    groups = image_names(fs, "etc/group")
    if out_path is not None:
        out = open(out_path, "wb")  # noqa: SIM115 - closed below
        spare: list[bytearray] = []

        def to_file(buf: bytearray) -> None:
            out.write(buf)
            spare.append(buf)

        stream = _BlockStream(to_file, lambda: spare.pop() if spare else None)
    else:
        assert sink is not None  # exactly one of the two is given (checked above)
        out = None
        stream = _BlockStream(sink.write, sink.reusable_buffer)
    count = 0
    try:
        put = stream.put
        for path, m, content in _entries(fs, entries):
            put(encode_header(header_for(path, m, users, groups)))
            count += 1
            if m.kind != FILE or not m.size:
                continue
            data = fs.content(path) if content is None else content
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


