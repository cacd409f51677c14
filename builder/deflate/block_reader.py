"""Inside one DEFLATE block: its end-of-block code, and its last symbol boundary before an
output offset.

The stitcher (`builder.deflate.splice`) can end a reused run in the middle of an original
block: it copies the block's bits up to a symbol boundary, closes the block with that block's
own end-of-block code, and compresses only the few bytes from the boundary to the cut. A
package's last block, which also holds the tar end-of-archive marker that must be cut, is then
reused up to the marker instead of being compressed again (DESIGN.md §4).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from builder.deflate.block_index import _Z_BLOCK, _Z_OK, _lib, _ZStream

_CL_ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)
_MAX_HEADER_BYTES = 700  # 17 + 19*3 + 316*(7+7) bits, rounded up
STORED, FIXED, DYNAMIC = 0, 1, 2


@dataclass(frozen=True)
class BlockHeader:
    final: bool  # BFINAL
    type: int  # STORED, FIXED or DYNAMIC
    eob_bits: int  # the end-of-block code, ready to append LSB first (0 for stored blocks)
    eob_nbits: int


class _Bits:
    def __init__(self, data: bytes | memoryview, bit: int) -> None:
        byte = bit // 8
        self.value = int.from_bytes(bytes(data[byte:byte + _MAX_HEADER_BYTES]), "little") \
            >> (bit % 8)
        self.left = min(len(data) - byte, _MAX_HEADER_BYTES) * 8 - bit % 8

    def get(self, n: int) -> int:
        if n > self.left:
            raise ValueError("block header runs past the data")
        v = self.value & ((1 << n) - 1)
        self.value >>= n
        self.left -= n
        return v


def _canonical_codes(lengths: list[int]) -> list[int]:
    """RFC 1951 §3.2.2: the canonical Huffman code of each symbol (0 where length is 0)."""
    counts = [0] * 16
    for n in lengths:
        counts[n] += 1
    counts[0] = 0
    next_code = [0] * 16
    code = 0
    for n in range(1, 16):
        code = (code + counts[n - 1]) << 1
        next_code[n] = code
    codes = [0] * len(lengths)
    for sym, n in enumerate(lengths):
        if n:
            codes[sym] = next_code[n]
            next_code[n] += 1
    return codes


def _reversed(code: int, n: int) -> int:
    """Huffman codes are packed most significant bit first into the LSB-first stream."""
    return int(f"{code:0{n}b}"[::-1], 2) if n else 0


def read_block_header(data: bytes | memoryview, bit: int) -> BlockHeader:
    """Parse the header of the block starting at `bit` of `data` far enough to know its
    end-of-block code. Raises ValueError on a malformed header."""
    r = _Bits(data, bit)
    final = bool(r.get(1))
    btype = r.get(2)
    if btype == STORED:
        return BlockHeader(final, STORED, 0, 0)
    if btype == FIXED:
        return BlockHeader(final, FIXED, 0, 7)  # symbol 256: seven zero bits
    if btype != DYNAMIC:
        raise ValueError("reserved block type 3")
    hlit = r.get(5) + 257
    hdist = r.get(5) + 1
    hclen = r.get(4) + 4
    cl_lengths = [0] * 19
    for sym in _CL_ORDER[:hclen]:
        cl_lengths[sym] = r.get(3)
    # Code-length codes are at most 7 bits: decode by looking up the next 7 bits.
    table: list[tuple[int, int] | None] = [None] * 128
    for sym, (n, code) in enumerate(zip(cl_lengths, _canonical_codes(cl_lengths), strict=True)):
        if n:
            rev = _reversed(code, n)
            for high in range(1 << (7 - n)):
                table[rev | (high << n)] = (sym, n)
    lengths: list[int] = []
    while len(lengths) < hlit + hdist:
        entry = table[r.value & 127]
        if entry is None:
            raise ValueError("invalid code-length code")
        sym, n = entry
        r.get(n)
        if sym < 16:
            lengths.append(sym)
        elif sym == 16:
            if not lengths:
                raise ValueError("repeat with no previous length")
            lengths.extend([lengths[-1]] * (3 + r.get(2)))
        elif sym == 17:
            lengths.extend([0] * (3 + r.get(3)))
        else:
            lengths.extend([0] * (11 + r.get(7)))
    litlen = lengths[:hlit]
    if len(lengths) > hlit + hdist or not litlen[256]:
        raise ValueError("invalid literal/length code lengths")
    eob = _canonical_codes(litlen)[256]
    return BlockHeader(final, DYNAMIC, _reversed(eob, litlen[256]), litlen[256])


def symbol_boundary(compressed: bytes | memoryview, bit: int, end_byte: int,
                    window: bytes, want: int) -> tuple[int, int] | None:
    """The last symbol boundary of a block at or before `want` bytes of its output.

    The block starts at `bit` of `compressed` and lies before byte `end_byte`; `window` is the
    (up to 32 KiB of) uncompressed output before it, which its matches may refer to. Inflates
    `want` bytes and asks zlib (`inflateMark`) where the code it was emitting began. Returns
    (bit offset of that code, how many output bytes precede it), or None when the block cannot
    be cut there (a stored block, or data zlib rejects)."""
    lib = _lib()
    stream = _ZStream()
    if lib.inflateInit2_(ctypes.byref(stream), -15, lib.zlibVersion(),
                         ctypes.sizeof(_ZStream)) != _Z_OK:
        return None
    try:
        byte, phase = divmod(bit, 8)
        base = byte + (1 if phase else 0)
        chunk = bytes(compressed[base:end_byte])
        if window and lib.inflateSetDictionary(ctypes.byref(stream), window,
                                               len(window)) != _Z_OK:
            return None
        if phase and lib.inflatePrime(ctypes.byref(stream), 8 - phase,
                                      compressed[byte] >> phase) != _Z_OK:
            return None
        keep = ctypes.c_char_p(chunk)
        out = ctypes.create_string_buffer(max(want, 1))
        stream.next_in = ctypes.cast(keep, ctypes.c_void_p).value
        stream.avail_in = len(chunk)
        stream.next_out = ctypes.addressof(out)
        stream.avail_out = want
        rc = lib.inflate(ctypes.byref(stream), _Z_BLOCK)
        if rc != _Z_OK or stream.avail_out:
            return None
        mark = lib.inflateMark(ctypes.byref(stream))
        back, emitted = mark >> 16, mark & 0xFFFF
        if back < 0:  # between blocks or inside a stored block
            return None
        position = base * 8 + stream.total_in * 8 - (stream.data_type & 63)
        return position - back, want - emitted
    finally:
        lib.inflateEnd(ctypes.byref(stream))
