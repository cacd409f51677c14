"""Concatenated gzip members: finding their boundaries, inflating across them, and writing
deterministic ones.

An `.apk` and an `APKINDEX.tar.gz` are several gzip members back to back; signatures cover
the *compressed* bytes of particular members, so the exact member boundaries matter. They are
found by inflating each member (the gzip header carries no length).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from builder import limits
from builder.errors import FormatError

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20
OUT_LIMIT = 8 << 20  # most uncompressed bytes produced per inflate call
# Fixed header: deflate, no flags, mtime 0, no extra flags, OS "unknown" (255) so the bytes do
# not depend on the machine or the clock.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
ENGINES = ("zlib", "isal")  # DEFLATE engines: stdlib zlib, and ISA-L (faster, other bytes)


def engine_module(engine: str) -> Any:
    """The zlib-compatible module of a DEFLATE engine (ISA-L is imported only when used)."""
    if engine == "zlib":
        return zlib
    if engine == "isal":
        from isal import isal_zlib

        return isal_zlib
    raise ValueError(f"unknown compressor engine {engine!r} (engines: {', '.join(ENGINES)})")


def _check_magic(data: bytes | memoryview, pos: int, source: str) -> None:
    if bytes(data[pos : pos + 2]) != GZIP_MAGIC:
        raise FormatError(f"{source}: not a gzip member at byte {pos}")


def member_end(data: bytes | memoryview, start: int, source: str) -> int:
    """Offset just past the gzip member starting at `start` (inflates it, output discarded)."""
    view = memoryview(data)
    _check_magic(view, start, source)
    d = zlib.decompressobj(31)
    pos = start
    try:
        while pos < len(view):
            chunk = view[pos : pos + CHUNK]
            pending: bytes | memoryview = chunk
            full = False
            while pending or full:
                # bounded output (discarded: only the boundary is wanted), so a highly
                # compressed member cannot blow up memory
                full = len(d.decompress(pending, OUT_LIMIT)) == OUT_LIMIT
                if d.eof:
                    return pos + len(chunk) - len(d.unused_data)
                pending = d.unconsumed_tail
            pos += len(chunk)
    except zlib.error as exc:
        raise FormatError(f"{source}: corrupt gzip member at byte {start}: {exc}") from None
    raise FormatError(f"{source}: truncated gzip member at byte {start}")


def split_members(data: bytes, source: str) -> list[tuple[int, int]]:
    """Byte ranges (start, end) of each concatenated gzip member of `data`."""
    if not data:
        raise FormatError(f"{source}: empty file, expected gzip data")
    ranges: list[tuple[int, int]] = []
    pos = 0
    view = memoryview(data)
    while pos < len(view):
        end = member_end(view, pos, source)
        ranges.append((pos, end))
        pos = end
    return ranges


def inflate_member(data: bytes | memoryview, start: int, source: str,
                   limit: str = "control-size") -> tuple[bytes, int]:
    """Inflate the single gzip member at `start`; returns (uncompressed bytes, end offset).
    The output is counted as it is made: past the `limit` of builder/limits.py (a small
    member's: signature, control) it is a LimitError, before more is held."""
    view = memoryview(data)
    _check_magic(view, start, source)
    d = zlib.decompressobj(31)
    out: list[bytes] = []
    total = 0
    pos = start
    try:
        while pos < len(view):
            chunk = view[pos : pos + CHUNK]
            pending: bytes | memoryview = chunk
            while True:
                piece = d.decompress(pending, OUT_LIMIT)
                if piece:
                    total += len(piece)
                    limits.check(source, f"inflated gzip member at byte {start}", limit, total)
                    out.append(piece)
                if d.eof:
                    return b"".join(out), pos + len(chunk) - len(d.unused_data)
                pending = d.unconsumed_tail
                if not pending and len(piece) < OUT_LIMIT:
                    break
            pos += len(chunk)
    except zlib.error as exc:
        raise FormatError(f"{source}: corrupt gzip member at byte {start}: {exc}") from None
    raise FormatError(f"{source}: truncated gzip member at byte {start}")


def iter_inflate(data: bytes | memoryview, source: str, chunk: int = CHUNK,
                 limit: str | None = None, what: str = "inflated data") -> Iterator[bytes]:
    """Yield the uncompressed bytes of all members of `data`, in order, streaming.

    Raises FormatError on garbage between or after members, or a truncated last member;
    with `limit` (a name in builder/limits.py), a LimitError naming `what` as soon as the
    output passes it.
    """
    total = 0
    view = memoryview(data)
    if not len(view):
        return
    pos = 0
    _check_magic(view, 0, source)
    d = zlib.decompressobj(31)
    member_start = 0
    try:
        while pos < len(view):
            piece = view[pos : pos + chunk]
            pending: bytes | memoryview = piece
            full = False
            while pending or full:
                out = d.decompress(pending, OUT_LIMIT)
                full = len(out) == OUT_LIMIT  # zlib may still hold output for this input
                if out:
                    total += len(out)
                    if limit is not None:
                        limits.check(source, what, limit, total)
                    yield out
                if d.eof:
                    break
                pending = d.unconsumed_tail
            if d.eof:
                pos = pos + len(piece) - len(d.unused_data)
                if pos < len(view):
                    _check_magic(view, pos, source)
                    member_start = pos
                    d = zlib.decompressobj(31)
                continue
            pos += len(piece)
    except zlib.error as exc:
        raise FormatError(f"{source}: corrupt gzip member at byte {member_start}: {exc}") from None
    if not d.eof:
        raise FormatError(f"{source}: truncated gzip member at byte {member_start}")


class InflateReader:
    """A read-only file object over the uncompressed content of concatenated gzip members
    (what `tarfile.open(mode="r|")` needs)."""

    def __init__(self, data: bytes | memoryview, source: str, limit: str | None = None,
                 what: str = "inflated data") -> None:
        self._it = iter_inflate(data, source, limit=limit, what=what)
        self._buf = bytearray()
        self._eof = False
        self.consumed = 0  # uncompressed bytes handed out so far

    def _fill(self, n: int) -> None:
        while not self._eof and (n < 0 or len(self._buf) < n):
            try:
                self._buf += next(self._it)
            except StopIteration:
                self._eof = True

    def read(self, n: int = -1) -> bytes:
        self._fill(n)
        if n < 0 or n >= len(self._buf):
            out = bytes(self._buf)
            self._buf.clear()
        else:
            out = bytes(self._buf[:n])
            del self._buf[:n]
        self.consumed += len(out)
        return out

    def readable(self) -> bool:
        return True


class GzipCompressor:
    """Streaming writer of ONE deterministic gzip member (fixed header, mtime 0).

    `engine="zlib"` gives the same bytes as any zlib at that level; `engine="isal"` is several
    times faster (levels 0-3) but its bytes differ from zlib's.
    """

    def __init__(self, level: int = 6, engine: str = "zlib") -> None:
        lib = engine_module(engine)
        if lib is zlib:
            self._c = zlib.compressobj(level, zlib.DEFLATED, -15, 9)
        else:
            self._c = lib.compressobj(level, lib.DEFLATED, -15)
        self._crc = 0
        self._size = 0
        self._started = False

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        out = self._c.compress(data)
        if not self._started:
            self._started = True
            return GZIP_HEADER + out
        return out

    def flush(self) -> bytes:
        head = b"" if self._started else GZIP_HEADER
        self._started = True
        tail = self._c.flush()
        return head + tail + struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF)


def gzip_member(data: bytes | Iterable[bytes], level: int = 6, engine: str = "zlib") -> bytes:
    """Compress `data` (bytes or chunks) into one deterministic gzip member."""
    comp = GzipCompressor(level, engine)
    parts: list[bytes] = []
    if isinstance(data, bytes | bytearray | memoryview):
        parts.append(comp.compress(data))
    else:
        for chunk in data:
            parts.append(comp.compress(chunk))
    parts.append(comp.flush())
    return b"".join(parts)
