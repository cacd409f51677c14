"""DEFLATE block boundaries of a gzip stream (the zran.c technique, via ctypes and libz).

`scan_blocks` inflates a (possibly multi-member) gzip stream with `inflate(Z_BLOCK)`, which
stops at every block boundary, and records for each block start its bit offset in the
compressed input, its offset in the uncompressed output and the CRC-32 of the output prefix of
its member. The stitched layer format (DESIGN.md §4) reuses whole original blocks between such
boundaries and re-compresses only around cuts.

Offsets are absolute: `bit` counts from the first byte of `data`, `out` from the start of the
concatenated uncompressed output of all members. Each member's own data start (just after its
gzip header) is recorded as a boundary with `member_start=True`.

The scan is a full inflate. With a `sink`, the uncompressed bytes it produces are handed on
in order (the fast expand writes them to its cached data tar), so one pass yields both the
data and its block index.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field

from isal import isal_zlib

from builder.errors import FormatError

_Z_BLOCK = 5
_Z_OK = 0
_Z_STREAM_END = 1
_Z_BUF_ERROR = -5
_OUT_CHUNK = 1 << 20  # output buffer: filled across block boundaries, then handed to the sink


class _ZStream(ctypes.Structure):
    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


def _load_libz() -> ctypes.CDLL:
    try:  # the soname every Linux zlib has: no `ldconfig -p` subprocess to find it
        lib = ctypes.CDLL("libz.so.1")
    except OSError:
        from ctypes.util import find_library

        lib = ctypes.CDLL(find_library("z") or "libz.so")
    lib.zlibVersion.restype = ctypes.c_char_p
    lib.inflateInit2_.argtypes = [ctypes.POINTER(_ZStream), ctypes.c_int, ctypes.c_char_p,
                                  ctypes.c_int]
    lib.inflate.argtypes = [ctypes.POINTER(_ZStream), ctypes.c_int]
    lib.inflateEnd.argtypes = [ctypes.POINTER(_ZStream)]
    # for builder.deflate.block_reader
    lib.inflateSetDictionary.argtypes = [ctypes.POINTER(_ZStream), ctypes.c_char_p,
                                         ctypes.c_uint]
    lib.inflatePrime.argtypes = [ctypes.POINTER(_ZStream), ctypes.c_int, ctypes.c_int]
    lib.inflateMark.argtypes = [ctypes.POINTER(_ZStream)]
    lib.inflateMark.restype = ctypes.c_long
    return lib


_libz: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libz
    if _libz is None:
        _libz = _load_libz()
    return _libz


@dataclass(frozen=True)
class BlockStart:
    """A point where a DEFLATE block starts (or a member's data starts)."""

    bit: int  # absolute bit offset in the compressed input
    out: int  # absolute offset in the concatenated uncompressed output
    crc: int  # CRC-32 of this member's output before `out`
    member: int  # index of the gzip member
    member_start: bool = False


@dataclass(frozen=True)
class MemberInfo:
    start: int  # byte offset of the gzip header
    data_bit: int  # bit offset of the first DEFLATE block
    end_bit: int  # bit offset just after the final block's last bit
    end: int  # byte offset just after the trailer
    out_start: int
    out_end: int
    crc: int


@dataclass(frozen=True)
class EarlyEnd:
    """A block that can be closed before its end: its bits up to `bit`, a symbol boundary
    at uncompressed offset `out`, then its own end-of-block code (`eob_bits`, `eob_nbits`,
    LSB first) give exactly the output up to `out` (builder.deflate.block_reader)."""

    block_bit: int  # where the block starts
    bit: int
    out: int
    final: bool  # the block's BFINAL bit (a reuse clears it)
    eob_bits: int
    eob_nbits: int


@dataclass(frozen=True)
class BlockIndex:
    blocks: list[BlockStart]
    members: list[MemberInfo]
    # Precomputed early ends, by the uncompressed offset they were asked for (the expand
    # cache records one before each package's tar end-of-archive marker).
    early_ends: dict[int, EarlyEnd] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.members[-1].out_end if self.members else 0


def _input(data: bytes | bytearray | memoryview) -> tuple[int, object]:
    """Address of `data`'s bytes and the object that keeps them alive. No copy for `bytes`
    or any writable buffer (e.g. an `mmap.ACCESS_COPY` map); other read-only buffers are
    copied once."""
    if isinstance(data, bytes):
        keep = ctypes.c_char_p(data)  # points at the bytes object's own storage
        return ctypes.cast(keep, ctypes.c_void_p).value or 0, keep
    view = memoryview(data)
    if not view.readonly and view.contiguous:
        arr = (ctypes.c_char * view.nbytes).from_buffer(view.cast("B"))
        return ctypes.addressof(arr), arr
    arr = ctypes.create_string_buffer(view.tobytes(), view.nbytes)
    return ctypes.addressof(arr), arr


def scan_blocks(data: bytes | bytearray | memoryview, source: str = "gzip stream",
                sink: Callable[[memoryview], object] | None = None) -> BlockIndex:
    """Find every DEFLATE block start in the gzip members of `data`.

    `sink`, when given, receives the uncompressed output of all members, in order, in pieces
    of up to 1 MiB. Each piece is a view of a reused buffer, valid only during the call:
    write or copy it there. A corrupt or truncated stream raises FormatError, possibly after
    some pieces were delivered."""
    lib = _lib()
    version = lib.zlibVersion()
    size = memoryview(data).nbytes
    if not size:
        raise FormatError(f"{source}: empty gzip stream")
    base, keep = _input(data)
    outbuf = ctypes.create_string_buffer(_OUT_CHUNK)
    out_addr = ctypes.addressof(outbuf)
    out_view = memoryview(outbuf).cast("B")
    blocks: list[BlockStart] = []
    members: list[MemberInfo] = []
    pos = 0
    out_base = 0
    member_no = 0
    filled = 0  # bytes of outbuf not yet handed to the sink
    try:
        while pos < size:
            stream = _ZStream()
            rc = lib.inflateInit2_(ctypes.byref(stream), 31, version, ctypes.sizeof(_ZStream))
            if rc != _Z_OK:
                raise FormatError(f"{source}: inflateInit2 failed ({rc})")
            stream.next_in = base + pos
            stream.avail_in = size - pos
            crc = 0
            data_bit = -1
            end_bit = -1
            try:
                while True:
                    if filled == _OUT_CHUNK:
                        if sink is not None:
                            sink(out_view)
                        filled = 0
                    stream.next_out = out_addr + filled
                    stream.avail_out = _OUT_CHUNK - filled
                    before_out = stream.total_out
                    rc = lib.inflate(ctypes.byref(stream), _Z_BLOCK)
                    produced = stream.total_out - before_out
                    if produced:
                        crc = isal_zlib.crc32(out_view[filled:filled + produced], crc)  # ~4x zlib's
                        filled += produced
                    if rc == _Z_BUF_ERROR and stream.avail_in == 0:
                        raise FormatError(f"{source}: truncated gzip member {member_no}")
                    if rc not in (_Z_OK, _Z_STREAM_END):
                        msg = stream.msg.decode() if stream.msg else f"zlib error {rc}"
                        raise FormatError(
                            f"{source}: corrupt gzip data in member {member_no} "
                            f"at byte {pos + stream.total_in}: {msg}"
                        )
                    dt = stream.data_type
                    bit = (pos + stream.total_in) * 8 - (dt & 7)
                    if rc == _Z_STREAM_END:
                        break
                    if dt & 128 and not dt & 64:
                        # At a block boundary. The end-of-last-block point (dt & 64) is not
                        # a start.
                        if data_bit < 0:
                            data_bit = bit
                        blocks.append(BlockStart(bit=bit, out=out_base + stream.total_out,
                                                 crc=crc, member=member_no,
                                                 member_start=(data_bit == bit)))
                    elif dt & 128 and end_bit < 0:
                        end_bit = bit  # just after the last block's end-of-block code
                    if rc == _Z_OK and produced == 0 and stream.avail_in == 0:
                        raise FormatError(f"{source}: truncated gzip member {member_no}")
                consumed = stream.total_in
                total_out = stream.total_out
            finally:
                lib.inflateEnd(ctypes.byref(stream))
            if end_bit < 0 or data_bit < 0:
                raise FormatError(f"{source}: gzip member {member_no} has no complete final "
                                  "block")
            members.append(MemberInfo(start=pos, data_bit=data_bit, end_bit=end_bit,
                                      end=pos + consumed, out_start=out_base,
                                      out_end=out_base + total_out, crc=crc))
            pos += consumed
            out_base += total_out
            member_no += 1
        if filled and sink is not None:
            sink(out_view[:filled])
    finally:
        out_view.release()
        del keep
    return BlockIndex(blocks=blocks, members=members)
