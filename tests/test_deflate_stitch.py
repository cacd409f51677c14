"""The stitcher's output decompresses to exactly the pieces asked for, and reuses most bytes."""

from __future__ import annotations

import gzip
import io
import random
import zlib
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from builder.apk.deflate_index import scan_blocks
from builder.deflate_stitch import _FILLERS, Source, Stitcher, crc32_combine
from tests.conftest import FIXTURES


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


def test_real_tzdata_multimember_data() -> None:
    raw = (FIXTURES / "apk/melange-local/tzdata-2023c-r0.multimember.x86_64.apk").read_bytes()
    index = scan_blocks(raw, "tzdata")
    parts, rest = [], raw
    while rest:
        d = zlib.decompressobj(31)
        parts.append(d.decompress(rest))
        rest = d.unused_data
    src = Source(compressed=raw, index=index, uncompressed=b"".join(parts), name="tzdata")
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
