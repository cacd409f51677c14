"""The stitcher's output decompresses to exactly the pieces asked for, and reuses most bytes."""

from __future__ import annotations

import gzip
import io
import random
import zlib
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from builder.deflate.block_index import scan_blocks
from builder.deflate.block_reader import DYNAMIC, FIXED, STORED, read_block_header, symbol_boundary
from builder.deflate.splice import _FILLERS, PARTIAL_MIN, Source, Stitcher, crc32_combine
from tests.helpers import FIXTURES


def _corpus(seed: int, n: int) -> bytes:
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz_.") for _ in range(rng.randint(2, 12)))
             for _ in range(2000)]
    parts = []
    size = 0
    while size < n:
        if rng.random() < 0.1:
            chunk = rng.randbytes(rng.randint(100, 3000))  # incompressible stretches
        else:
            chunk = b" ".join(rng.choice(words) for _ in range(rng.randint(50, 500))) + b"\n"
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)[:n]


def _source(data: bytes, level: int = 6, members: int = 1, name: str = "src") -> Source:
    cuts = sorted(random.Random(len(data)).sample(range(1, len(data)), members - 1))
    bounds = [0, *cuts, len(data)]
    comp = b"".join(gzip.compress(data[a:b], level, mtime=0) for a, b in pairwise(bounds))
    return Source(compressed=comp, index=scan_blocks(comp, name), uncompressed=data, name=name)


def _stitch(pieces, engine: str = "zlib", level: int = 6) -> tuple[bytes, Stitcher]:
    out = io.BytesIO()
    st_ = Stitcher(out.write, level, engine)
    expected = []
    for piece in pieces:
        if isinstance(piece, bytes):
            st_.literal(piece)
            expected.append(piece)
        else:
            src, a, b = piece
            st_.reuse(src, a, b)
            expected.append(bytes(src.uncompressed[a:b]))
    crc, size = st_.finish()
    blob = out.getvalue()
    whole = b"".join(expected)
    assert gzip.decompress(blob) == whole  # checks CRC-32 and size too
    assert (crc, size) == (zlib.crc32(whole), len(whole))
    assert st_.compressed_size == len(blob)
    return blob, st_


def test_fillers_reach_every_phase_and_inflate_to_nothing() -> None:
    for phase, (bits, nbits) in enumerate(_FILLERS):
        assert nbits % 8 == phase
        # filler + final empty fixed block, padded: a raw deflate stream of no bytes
        total = bits | (0b011 << nbits)
        raw = total.to_bytes((nbits + 10 + 7) // 8, "little")
        assert zlib.decompress(raw, -15) == b""


def test_whole_stream_is_reused_verbatim() -> None:
    data = _corpus(1, 600_000)
    src = _source(data)
    blob, st_ = _stitch([(src, 0, len(data))])
    assert st_.recompressed_in == 0
    assert st_.reused_bytes >= len(src.compressed) - 30


def test_concatenated_sources_with_cuts_and_literals() -> None:
    a, b = _source(_corpus(2, 500_000), name="a"), _source(_corpus(3, 400_000), name="b")
    pieces = [
        (a, 0, 200_000), b"HEADER" * 100, (a, 250_000, 499_000),
        (b, 0, 100_000), (b, 100_000, 399_000), b"tail",
    ]
    blob, st_ = _stitch(pieces)
    total = len(a.compressed) + len(b.compressed)
    assert st_.reused_bytes > 0.6 * total
    assert st_.recompressed_in < 300_000


def test_multi_member_source_and_final_blocks() -> None:
    src = _source(_corpus(4, 700_000), members=4)
    assert len(src.index.members) == 4
    blob, st_ = _stitch([(src, 0, 700_000)])
    assert st_.reused_bytes > 0.9 * len(src.compressed)
    _stitch([(src, 123, 650_000), (src, 650_000, 700_000)])


def _tzdata_source() -> Source:
    """The multi-member tzdata fixture, every gzip member of it (signature, control, data)."""
    raw = (FIXTURES / "apk/melange-local/tzdata-2023c-r0.multimember.x86_64.apk").read_bytes()
    parts, rest = [], raw
    while rest:
        d = zlib.decompressobj(31)
        parts.append(d.decompress(rest))
        rest = d.unused_data
    return Source(compressed=raw, index=scan_blocks(raw, "tzdata"),
                  uncompressed=b"".join(parts), name="tzdata")


def test_real_tzdata_multimember_data() -> None:
    src = _tzdata_source()
    index = src.index
    n = index.size
    _stitch([(src, index.members[2].out_start, n - 1024), b"\0" * 1024])


def test_crc32_combine() -> None:
    x, y = b"hello " * 1000, b"world" * 777
    assert crc32_combine(zlib.crc32(x), zlib.crc32(y), len(y)) == zlib.crc32(x + y)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 399_999), st.integers(0, 60_000)),
                min_size=1, max_size=8),
       st.sampled_from([("zlib", 1), ("zlib", 9), ("isal", 0), ("isal", 2), ("isal", 3)]))
def test_random_pieces(spec, engine_level) -> None:
    sources = _SOURCES
    pieces = []
    for which, start, length in spec:
        if which == 2:
            pieces.append(bytes([start % 251]) * (length % 500))
        else:
            src = sources[which]
            pieces.append((src, start, min(start + length * 5, len(src.uncompressed))))
    _stitch(pieces, *engine_level)


_SOURCES = [_source(_corpus(10, 400_000), level=9, name="s0"),
            _source(_corpus(11, 400_000), level=1, members=3, name="s1")]


def _raw_source(data: bytes, level: int, strategy: int) -> Source:
    comp = zlib.compressobj(level, zlib.DEFLATED, 31, 9, strategy)
    blob = comp.compress(data) + comp.flush()
    return Source(compressed=blob, index=scan_blocks(blob, "raw"), uncompressed=data, name="raw")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 6, 9]),
       st.sampled_from([zlib.Z_DEFAULT_STRATEGY, zlib.Z_FILTERED, zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE,
                        zlib.Z_FIXED]),
       st.floats(0.05, 0.999))
def test_block_header_and_symbol_boundary(level, strategy, where) -> None:
    """Closing a block at the boundary zlib reports, with the end-of-block code read from its
    header, gives a stream that inflates to exactly the bytes before that boundary."""
    data = _CORPUS_300K
    src = _raw_source(data, level, strategy)
    m = src.index.members[0]
    blocks = src.blocks(0)
    blk = blocks[int(where * len(blocks))]
    nxt = blocks[blocks.index(blk) + 1].out if blk is not blocks[-1] else m.out_end
    want = max(1, int((nxt - blk.out) * where))
    header = read_block_header(src.compressed, blk.bit)
    assert header.final == (blk is blocks[-1])
    assert header.type == (FIXED if strategy == zlib.Z_FIXED else DYNAMIC)
    window = data[max(0, blk.out - 32768):blk.out]
    end_byte = (blocks[blocks.index(blk) + 1].bit + 7) // 8 if blk is not blocks[-1] \
        else (m.end_bit + 7) // 8
    found = symbol_boundary(src.compressed, blk.bit, end_byte, window, want)
    assert found is not None
    bit, out = found
    assert blk.bit < bit and 0 <= want - out <= 258
    # The raw stream: everything up to the boundary (BFINAL cleared), the block's own
    # end-of-block code, then an empty final fixed block.
    stream = int.from_bytes(src.compressed, "little") >> m.data_bit
    nbits = bit - m.data_bit
    value = stream & ((1 << nbits) - 1)
    value &= ~(1 << (blk.bit - m.data_bit))
    value |= header.eob_bits << nbits
    nbits += header.eob_nbits
    value |= 0b011 << nbits
    nbits += 10
    raw = value.to_bytes((nbits + 7) // 8, "little")
    assert zlib.decompress(raw, -15) == data[:blk.out + out]


def test_stored_blocks_are_not_cut_inside() -> None:
    data = random.Random(5).randbytes(100_000)  # incompressible: zlib stores it
    src = _raw_source(data, 6, zlib.Z_DEFAULT_STRATEGY)
    blk = src.blocks(0)[0]
    assert read_block_header(src.compressed, blk.bit).type == STORED
    assert symbol_boundary(src.compressed, blk.bit, len(src.compressed), b"", 5000) is None
    _stitch([(src, 0, 70_000), (src, 90_000, 100_000)])


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([(9, zlib.Z_DEFAULT_STRATEGY), (1, zlib.Z_FIXED), (6, zlib.Z_RLE)]),
       st.integers(PARTIAL_MIN + 1, 299_000))
def test_run_ending_inside_a_block_reuses_it_up_to_the_cut(kind, end) -> None:
    """A tail cut (e.g. a package's end-of-archive marker) recompresses at most one symbol's
    bytes of the block it falls in, not the block."""
    src = _raw_source(_CORPUS_300K, *kind)
    blob, st_ = _stitch([(src, 0, end), b"new bytes"])
    blocks = src.blocks(0)
    j = src.last_block_at_or_before(0, end)
    if end - blocks[j].out >= PARTIAL_MIN:
        assert st_.recompressed_in <= 258 + len(b"new bytes")


def test_package_tail_before_end_of_archive_is_reused() -> None:
    """The tzdata fixture's last member without its 1024-byte end-of-archive marker."""
    src = _tzdata_source()
    index = src.index
    end = index.size - 1024
    last = len(index.members) - 1
    j = src.last_block_at_or_before(last, end)
    assert end - src.blocks(last)[j].out >= PARTIAL_MIN  # the marker is deep inside a block
    _, st_ = _stitch([(src, index.members[2].out_start, end)])
    assert st_.recompressed_in <= 258


_CORPUS_300K = _corpus(20, 300_000)
