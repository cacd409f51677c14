"""Stitch a gzip member out of other gzip streams' own DEFLATE blocks.

The stitched layer (DESIGN.md §4) is mostly bytes the packages already ship compressed. The
`Stitcher` writes one gzip member whose uncompressed content is a sequence of pieces:

- `reuse(source, start, end)`: bytes `[start, end)` of a source's uncompressed stream. Whole
  original DEFLATE blocks inside the range are copied bit for bit; only the edges are compressed
  again: from `start` up to the first block boundary whose 32 KiB window is already in the
  output (so reused blocks never refer back to bytes that are not there), and at `end`: when
  `end` falls inside a block, that block is reused up to its last symbol boundary before `end`
  and closed with its own end-of-block code (`builder.deflate.block_reader`), so at most one
  match (258 bytes) is compressed again there.
- `literal(data)`: new bytes (rewritten headers, files apko adds), compressed by us.

Bit alignment without shifting: an original block starts at an arbitrary bit. Our own compressed
pieces end byte-aligned (sync flush); before a reused run we emit an empty dynamic-Huffman block
whose length puts the stream at exactly that bit phase, so the original bytes are copied as they
are (only the first and last byte are merged). After a reused run an empty stored block
re-aligns the stream. CRC-32 of reused runs comes from the CRCs recorded at block boundaries
(`builder.deflate.block_index`) via CRC combination, so reused bytes are never re-read for it.
"""

from __future__ import annotations

import bisect
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from isal import isal_zlib

from builder.deflate.block_index import BlockIndex, BlockStart, EarlyEnd
from builder.deflate.block_reader import STORED, read_block_header, symbol_boundary
from builder.deflate.gzipstream import GZIP_HEADER, engine_module

WINDOW = 32 * 1024


# CRC-32 of A+B from crc(A), crc(B) and len(B).
crc32_combine = isal_zlib.crc32_combine


@dataclass
class Source:
    """One original gzip stream: its compressed bytes, block index and uncompressed bytes."""

    compressed: bytes | memoryview
    index: BlockIndex
    uncompressed: bytes | memoryview
    name: str = ""
    # Where `compressed` lies in a file, (descriptor, offset of its first byte), when it does:
    # the writer may then copy reused runs file to file in the kernel.
    origin: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self._blocks: dict[int, list[BlockStart]] = {}
        for blk in self.index.blocks:
            self._blocks.setdefault(blk.member, []).append(blk)
        self._outs = {m: [b.out for b in blks] for m, blks in self._blocks.items()}
        self._member_starts = [m.out_start for m in self.index.members]

    def member_of(self, offset: int) -> int:
        i = bisect.bisect_right(self._member_starts, offset) - 1
        if i < 0 or offset >= self.index.members[i].out_end:
            raise ValueError(f"{self.name}: offset {offset} outside the stream")
        return i

    def blocks(self, member: int) -> list[BlockStart]:
        return self._blocks.get(member, [])

    def first_block_at_or_after(self, member: int, offset: int) -> int:
        """Index into blocks(member) of the first block starting at or after `offset`."""
        return bisect.bisect_left(self._outs.get(member, []), offset)

    def last_block_at_or_before(self, member: int, offset: int) -> int:
        """Index into blocks(member) of the last block starting at or before `offset` (-1: none)."""
        return bisect.bisect_right(self._outs.get(member, []), offset) - 1


def _filler_block(phase: int) -> tuple[int, int]:
    """An empty, non-final dynamic-Huffman block whose bit length is ≡ `phase` (mod 8).

    Literal/length code: symbols 0..254 of length 8, 255 and 256 (end of block) of length 9
    (a complete code); no distance codes. Code-length code: symbols 0, 8, 9, 16 of length 2.
    The number of code-length entries (7..14) tunes the block length in 3-bit steps, which
    reaches every residue mod 8. Returns (bits, nbits), LSB first.
    """
    order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
    cl_len = {0: 2, 8: 2, 9: 2, 16: 2}
    cl_code = {0: 0b00, 8: 0b01, 9: 0b10, 16: 0b11}  # canonical, by symbol order
    for n in range(7, 15):
        if (206 + 3 * n) % 8 == phase % 8:
            break
    bits = 0
    nbits = 0

    def put(value: int, count: int) -> None:
        nonlocal bits, nbits
        bits |= value << nbits
        nbits += count

    def put_code(code: int, length: int) -> None:  # Huffman codes go MSB first
        put(int(f"{code:0{length}b}"[::-1], 2), length)

    put(0, 1)  # BFINAL = 0
    put(2, 2)  # BTYPE = 10 (dynamic)
    put(0, 5)  # HLIT: 257 literal/length codes
    put(0, 5)  # HDIST: 1 distance code (of length 0)
    put(n - 4, 4)  # HCLEN
    for sym in order[:n]:
        put(cl_len.get(sym, 0), 3)
    # 255 × length 8: one literal 8 then 254 repeats as 16 (repeat 3..6): 42×6 + 5 + 3... built
    # as 41×6 + 5 + 3 = 254.
    put_code(cl_code[8], 2)
    for repeat in [6] * 41 + [5, 3]:
        put_code(cl_code[16], 2)
        put(repeat - 3, 2)
    put_code(cl_code[9], 2)
    put_code(cl_code[9], 2)
    put_code(cl_code[0], 2)  # the single distance code: length 0
    put(0b111111111, 9)  # end of block: code 511 of length 9
    assert nbits % 8 == phase % 8 and nbits == 206 + 3 * n
    return bits, nbits


_FILLERS = [_filler_block(p) for p in range(8)]
_STORED_EMPTY = b"\x00\x00\xff\xff"
# A run that ends inside a block reuses that block up to a symbol boundary (`early_end`) when
# at least this many of its output bytes come before the cut: below it, compressing them is
# cheaper than inflating the block to find the boundary. Precomputed early ends (the block
# index's `early_ends`) are used whatever their size.
PARTIAL_MIN = 8 * 1024


def early_end(src: Source, end: int) -> EarlyEnd | None:
    """Where the block holding uncompressed offset `end` of `src` can be closed so that the
    output stops at its last symbol boundary before `end`; None when `end` is a block
    boundary, the block is stored, or zlib rejects the data."""
    try:
        member = src.member_of(end)
    except ValueError:
        return None
    blocks = src.blocks(member)
    j = src.last_block_at_or_before(member, end)
    if j < 0 or blocks[j].out == end:
        return None
    blk = blocks[j]
    m = src.index.members[member]
    try:
        header = read_block_header(src.compressed, blk.bit)
    except ValueError:
        return None
    if header.type == STORED:
        return None
    end_bit = blocks[j + 1].bit if j + 1 < len(blocks) else m.end_bit
    window = bytes(memoryview(src.uncompressed)[max(m.out_start, blk.out - WINDOW):blk.out])
    found = symbol_boundary(src.compressed, blk.bit, (end_bit + 7) // 8, window,
                            end - blk.out)
    if found is None or found[1] == 0:
        return None
    return EarlyEnd(block_bit=blk.bit, bit=found[0], out=blk.out + found[1], final=header.final,
                    eob_bits=header.eob_bits, eob_nbits=header.eob_nbits)


class Stitcher:
    """Writes one gzip member built from reused and new pieces. See the module docstring."""

    def __init__(self, write: Callable[..., object], level: int = 6,
                 engine: str = "zlib") -> None:
        """`write(data, origin=None)` receives the output in order; `origin`, for a run of
        bytes copied verbatim from a `Source` with an origin, is (descriptor, offset) of the
        same bytes in that file. `engine`/`level`: what compresses the bytes that are not
        reused — "zlib" (levels 1-9) or "isal" (ISA-L, levels 0-3, many times faster at a
        slightly lower ratio)."""
        self._write = write
        self._level = level
        self._engine = engine_module(engine)
        self._bits = 0  # pending output bits (< 8 of them), LSB first
        self._nbits = 0
        self._crc = 0
        self._size = 0
        self._pending: list[bytes | memoryview] = []  # bytes waiting to be compressed by us
        self._window = b""  # last ≤ 32 KiB of uncompressed output, for zdict priming
        # The output currently ends with src.uncompressed[run_start:run_end] (same member).
        self._run: tuple[Source, int, int, int] | None = None
        # (id(source), bit) when the output ends exactly where that source's bits were copied to.
        self._at: tuple[int, int] | None = None
        self.reused_bytes = 0  # compressed bytes copied verbatim
        self.recompressed_in = 0  # uncompressed bytes we compressed
        self.recompressed_out = 0  # compressed bytes we produced
        self._write(GZIP_HEADER)
        self.compressed_size = len(GZIP_HEADER)

    # -- bit output ---------------------------------------------------------------------
    def _emit(self, data: bytes | memoryview, origin: tuple[int, int] | None = None) -> None:
        if data:
            if origin is None:
                self._write(data)
            else:
                self._write(data, origin)
            self.compressed_size += len(data)

    def _put_bits(self, value: int, count: int) -> None:
        self._bits |= value << self._nbits
        self._nbits += count
        whole = self._nbits // 8
        if whole:
            self._emit((self._bits & ((1 << (8 * whole)) - 1)).to_bytes(whole, "little"))
            self._bits >>= 8 * whole
            self._nbits -= 8 * whole

    def _align(self) -> None:
        """Byte-align with an empty stored block (what a sync flush emits)."""
        if self._nbits:
            self._put_bits(0, 3)  # BFINAL=0, BTYPE=00
            if self._nbits:
                self._put_bits(0, 8 - self._nbits)
            self._emit(_STORED_EMPTY)
        self._at = None

    def _copy_bits(self, src: Source, start: int, end: int) -> None:
        """Append bits [start, end) of `src.compressed`; our phase must already equal
        start % 8."""
        assert self._nbits == start % 8
        data = src.compressed
        if start == end:
            return
        first, k = divmod(start, 8)
        last, j = divmod(end, 8)
        if first == last:  # within one byte
            self._put_bits((data[first] >> k) & ((1 << (j - k)) - 1), j - k)
            return
        if k:
            self._put_bits(data[first] >> k, 8 - k)
            first += 1
        origin = (src.origin[0], src.origin[1] + first) if src.origin else None
        self._emit(memoryview(data)[first:last], origin)
        if j:
            self._put_bits(data[last] & ((1 << j) - 1), j)

    # -- pieces -------------------------------------------------------------------------
    def literal(self, data: bytes | memoryview) -> None:
        if data:
            self._pending.append(data)
            self._run = None

    def reuse(self, src: Source, start: int, end: int) -> None:
        """Append src's uncompressed bytes [start, end), reusing its blocks where possible."""
        while start < end:
            member = src.member_of(start)
            stop = min(end, src.index.members[member].out_end)
            self._reuse_in_member(src, member, start, stop)
            start = stop

    def _reuse_in_member(self, src: Source, member: int, start: int, end: int) -> None:
        m = src.index.members[member]
        blocks = src.blocks(member)
        run = self._run
        run_start = run[2] if run and run[0] is src and run[1] == member and run[3] == start \
            else start
        window_ok_from = m.out_start if run_start == m.out_start else run_start + WINDOW
        i = src.first_block_at_or_after(member, max(start, window_ok_from))
        self._run = (src, member, run_start, end)
        if i >= len(blocks) or blocks[i].out > end:
            self._pending.append(memoryview(src.uncompressed)[start:end])
            return
        first = blocks[i]
        final_block = -1
        inside: EarlyEnd | None = None
        if end == m.out_end:  # reuse through the member's final block, made non-final
            last_bit, last_out, last_crc = m.end_bit, m.out_end, m.crc
            final_block = blocks[-1].bit
        else:
            j = src.last_block_at_or_before(member, end)
            last_bit, last_out, last_crc = blocks[j].bit, blocks[j].out, blocks[j].crc
            if j >= i and last_out < end:
                inside = src.index.early_ends.get(end)
                if inside is None and end - last_out >= PARTIAL_MIN:
                    inside = early_end(src, end)
                if inside is not None and (inside.block_bit != last_bit
                                           or not last_out < inside.out <= end):
                    inside = None  # a record that does not fit this block: not used
        if last_out <= first.out and inside is None:
            self._pending.append(memoryview(src.uncompressed)[start:end])
            return
        if first.out > start:
            self._pending.append(memoryview(src.uncompressed)[start:first.out])
        continuing = (not self._pending and self._at is not None
                      and self._at == (id(src), first.bit))
        if not continuing:
            self._flush_pending()
            self._align()
            if first.bit % 8:
                self._put_bits(*_FILLERS[first.bit % 8])
        if inside is not None:  # reuse into block j, up to a symbol boundary
            if inside.final:
                final_block = last_bit
            last_bit = inside.bit
        before = self.compressed_size
        if final_block >= 0:
            self._copy_bits(src, first.bit, final_block)
            self._put_bits(0, 1)  # BFINAL cleared
            self._copy_bits(src, final_block + 1, last_bit)
        else:
            self._copy_bits(src, first.bit, last_bit)
        self.reused_bytes += self.compressed_size - before
        seg_len = last_out - first.out
        seg_crc = last_crc ^ crc32_combine(first.crc, 0, seg_len)
        if inside is not None:
            self._put_bits(inside.eob_bits, inside.eob_nbits)
            seg_crc = isal_zlib.crc32(memoryview(src.uncompressed)[last_out:inside.out], seg_crc)
            seg_len += inside.out - last_out
            last_out = inside.out
        self._crc = crc32_combine(self._crc, seg_crc, seg_len)
        self._size += seg_len
        self._remember_window(memoryview(src.uncompressed)[max(first.out, last_out - WINDOW):
                                                           last_out])
        self._at = (id(src), last_bit) if final_block < 0 and inside is None else None
        if last_out < end:
            self._pending.append(memoryview(src.uncompressed)[last_out:end])

    def detach(self) -> None:
        """Stop referring to any source: pending bytes are copied, so the caller may unmap
        the sources it passed so far (later `reuse` calls start a new run)."""
        self._pending = [bytes(p) for p in self._pending]
        self._run = None
        self._at = None

    def _remember_window(self, tail: bytes | memoryview) -> None:
        if len(tail) >= WINDOW:
            self._window = bytes(tail[-WINDOW:])
        else:
            self._window = (self._window + bytes(tail))[-WINDOW:]

    def _flush_pending(self, final: bool = False) -> None:
        if not self._pending and not final:
            return
        data = b"".join(self._pending)
        self._pending = []
        self._align()
        engine = self._engine
        comp = engine.compressobj(self._level, engine.DEFLATED, -15, 9, zdict=self._window) \
            if self._window else engine.compressobj(self._level, engine.DEFLATED, -15, 9)
        out = comp.compress(data) + comp.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
        self._emit(out)
        self.recompressed_in += len(data)
        self.recompressed_out += len(out)
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._remember_window(data)

    def finish(self) -> tuple[int, int]:
        """Close the member (final block + trailer). Returns (crc32, uncompressed size)."""
        self._flush_pending(final=True)
        self._emit(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        return self._crc, self._size
