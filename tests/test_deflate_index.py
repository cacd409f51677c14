"""Block boundaries found by the Z_BLOCK scan are real: a stream cut at any of them and closed
with a final empty block decompresses to exactly the prefix, with the recorded CRC."""

from __future__ import annotations

import gzip
import random
import struct
import zlib

import pytest

from builder.apk.deflate_index import scan_blocks
from builder.errors import FormatError
from tests.conftest import FIXTURES


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
