"""Block boundaries found by the Z_BLOCK scan are real: a stream cut at any of them and closed
with a final empty block decompresses to exactly the prefix, with the recorded CRC."""

from __future__ import annotations

import gzip
import mmap
import random
import struct
import zlib
from pathlib import Path

import pytest

from builder.apk.layout import read_layout
from builder.deflate import block_index as deflate_index
from builder.deflate.block_index import BlockIndex, scan_blocks
from builder.errors import FormatError
from tests.helpers import FIXTURES, GOLDEN


def _text(seed: int, n: int) -> bytes:
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnop") for _ in range(rng.randint(2, 9)))
             for _ in range(400)]
    return b" ".join(rng.choice(words) for _ in range(n))


def _cut(gz: bytes, bit: int, out: int, crc: int, member_start_byte: int) -> bytes:
    """Keep the member's bits before `bit`, then a final empty fixed-Huffman block."""
    k = bit % 8
    head = bytearray(gz[member_start_byte: bit // 8])
    last = gz[bit // 8] & ((1 << k) - 1) if k else 0
    # BFINAL=1, BTYPE=01 then the 7-bit EOB code (all zeros), LSB first from bit k.
    value = last | (0b011 << k)
    nbits = k + 10
    head += value.to_bytes((nbits + 7) // 8, "little")
    return bytes(head) + struct.pack("<II", crc, out & 0xFFFFFFFF)


def test_boundaries_cut_cleanly_single_member() -> None:
    data = _text(1, 400_000)
    gz = gzip.compress(data, 6, mtime=0)
    index = scan_blocks(gz)
    assert len(index.members) == 1
    assert index.size == len(data)
    assert len(index.blocks) > 5
    assert index.blocks[0].bit == 80 and index.blocks[0].out == 0
    for block in index.blocks:
        assert block.crc == zlib.crc32(data[: block.out])
        assert gzip.decompress(_cut(gz, block.bit, block.out, block.crc, 0)) == data[: block.out]


def test_multi_member_offsets_are_absolute() -> None:
    a, b = _text(2, 50_000), _text(3, 70_000)
    gz = gzip.compress(a, 6, mtime=0) + gzip.compress(b, 1, mtime=0)
    index = scan_blocks(gz)
    assert [m.out_start for m in index.members] == [0, len(a)]
    assert index.members[1].start == len(gzip.compress(a, 6, mtime=0))
    second = [blk for blk in index.blocks if blk.member == 1]
    assert second[0].member_start and second[0].out == len(a) and second[0].crc == 0
    for blk in second:
        assert blk.crc == zlib.crc32(b[: blk.out - len(a)])


def test_real_multimember_tzdata_data_section() -> None:
    apk = (FIXTURES / "apk/melange-local/tzdata-2023c-r0.multimember.x86_64.apk").read_bytes()
    index = scan_blocks(apk, "tzdata")
    whole = b""
    d = zlib.decompressobj(31)
    rest = apk
    while rest:
        d = zlib.decompressobj(31)
        whole += d.decompress(rest)
        rest = d.unused_data
    assert index.size == len(whole)
    assert len(index.members) > 3  # signature, control, and a data section of several members
    for blk in index.blocks:
        m = index.members[blk.member]
        assert blk.crc == zlib.crc32(whole[m.out_start: blk.out])


def test_corrupt_stream_is_a_clear_error() -> None:
    gz = bytearray(gzip.compress(_text(4, 20_000), 6, mtime=0))
    gz[len(gz) // 2] ^= 0xFF
    gz[len(gz) // 2 + 1] ^= 0xFF
    with pytest.raises(FormatError, match="corrupt gzip|truncated"):
        scan_blocks(bytes(gz), "x.apk")


# -- the output sink: one pass gives the data and its index ---------------------------------

PACKAGES = sorted(p for p in (FIXTURES / "apk").glob("**/*.apk") if "negative" not in p.parts) \
    + sorted((GOLDEN / "packages").glob("*/*.apk"))


def _inflate_all(gz: bytes) -> bytes:
    out = []
    while gz:
        d = zlib.decompressobj(31)
        out.append(d.decompress(gz))
        assert d.eof
        gz = d.unused_data
    return b"".join(out)


def _scan_collecting(data: object, source: str = "x") -> tuple[BlockIndex, bytes]:
    pieces: list[bytes] = []
    index = scan_blocks(data, source, lambda piece: pieces.append(bytes(piece)))  # type: ignore[arg-type]
    return index, b"".join(pieces)


@pytest.mark.parametrize("path", PACKAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sink_gets_the_data_and_the_index_is_unchanged(path: Path) -> None:
    """Every fixture package's data section (tzdata's has several members): the index made
    with a sink equals the one made without, and the sink got exactly the inflated bytes."""
    section = path.read_bytes()[read_layout(path).control_end:]
    plain = scan_blocks(section, path.name)
    index, out = _scan_collecting(section, path.name)
    assert index == plain
    assert out == _inflate_all(section)
    assert len(out) == index.size


def test_every_buffer_kind_gives_the_same_result(tmp_path: Path) -> None:
    """bytes and writable buffers are used in place, read-only buffers copied: same index."""
    path = FIXTURES / "apk/melange-local/tzdata-2023c-r0.multimember.x86_64.apk"
    start = read_layout(path).control_end
    raw = path.read_bytes()
    want, want_out = _scan_collecting(raw[start:])
    assert len(want.members) > 1
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as private, \
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as shared:
        for buf in (bytearray(raw[start:]), memoryview(private)[start:],
                    memoryview(shared)[start:], memoryview(raw)[start:]):
            assert _scan_collecting(buf) == (want, want_out)
            if isinstance(buf, memoryview):
                buf.release()  # no export left behind: the maps close below
        assert private[:] == raw  # the scan never wrote to the private map


def test_small_output_buffer_splits_blocks_and_members(monkeypatch: pytest.MonkeyPatch) -> None:
    """An output buffer far smaller than blocks and members: pieces end mid-block and
    mid-member, the index and the bytes do not change."""
    a, b = _text(5, 60_000), _text(6, 90_000)
    gz = gzip.compress(a, 9, mtime=0) + gzip.compress(b, 6, mtime=0)
    want = scan_blocks(gz)
    monkeypatch.setattr(deflate_index, "_OUT_CHUNK", 777)
    sizes: list[int] = []
    pieces: list[bytes] = []

    def sink(piece: memoryview) -> None:
        sizes.append(len(piece))
        pieces.append(bytes(piece))

    assert scan_blocks(gz, "x", sink) == want
    assert b"".join(pieces) == a + b
    assert max(sizes) == 777 and len(sizes) > (len(a) + len(b)) // 777


def test_corrupt_stream_with_a_sink_is_a_clear_error() -> None:
    gz = bytearray(gzip.compress(_text(7, 200_000), 6, mtime=0))
    gz[len(gz) // 2] ^= 0xFF
    gz[len(gz) // 2 + 1] ^= 0xFF
    with pytest.raises(FormatError, match="x.apk: (corrupt gzip|truncated)"):
        scan_blocks(bytes(gz), "x.apk", lambda piece: None)
    with pytest.raises(FormatError, match="x.apk: truncated"):
        scan_blocks(gzip.compress(_text(8, 50_000), 6)[:-2000], "x.apk", lambda piece: None)


def test_sink_errors_propagate() -> None:
    def failing(piece: memoryview) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        scan_blocks(gzip.compress(_text(9, 400_000), 6), "x", failing)
