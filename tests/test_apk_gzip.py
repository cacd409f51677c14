"""Gzip member splitting, multi-member inflation, deterministic compression."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.deflate.gzipstream import (
    InflateReader,
    gzip_member,
    inflate_member,
    iter_inflate,
    split_members,
)
from builder.errors import FormatError
from tests.helpers import FIXTURES

TZDATA = FIXTURES / "apk/melange-local/tzdata-2023c-r0.multimember.x86_64.apk"
STRACE = FIXTURES / "apk/alpine/strace-5.17-r0.apk"


def test_split_members_tzdata_is_six_contiguous_members() -> None:
    data = TZDATA.read_bytes()
    ranges = split_members(data, str(TZDATA))
    assert len(ranges) == 6  # signature, control, 4 data members of 1 MiB each
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert end == start
    # Each range is a complete gzip member on its own.
    for start, end in ranges:
        zlib.decompress(data[start:end], 31)


def test_split_members_alpine_three_members() -> None:
    data = STRACE.read_bytes()
    assert len(split_members(data, "strace")) == 3


def test_iter_inflate_matches_gzip_module() -> None:
    data = TZDATA.read_bytes()
    assert b"".join(iter_inflate(data, "tzdata", chunk=4096)) == gzip.decompress(data)


def test_inflate_reader_reads_across_members() -> None:
    data = gzip_member(b"hello ") + gzip_member(b"world")
    reader = InflateReader(data, "two")
    assert reader.read(3) == b"hel"
    assert reader.read(5) == b"lo wo"
    assert reader.read() == b"rld"
    assert reader.read(10) == b""


@pytest.mark.parametrize(
    "blob, where",
    [
        (gzip_member(b"abc") + b"garbage!!", "byte 23"),
        (b"XX" + gzip_member(b"abc"), "byte 0"),
        (gzip_member(b"abc" * 1000)[:-6], "truncated"),
    ],
)
def test_garbage_is_a_format_error_naming_the_source(blob: bytes, where: str) -> None:
    with pytest.raises(FormatError, match=rf"some/file\.apk: .*{where}"):
        split_members(blob, "some/file.apk")
    with pytest.raises(FormatError, match="some/file.apk"):
        b"".join(iter_inflate(blob, "some/file.apk"))


def test_corrupt_deflate_stream_is_reported() -> None:
    good = bytearray(gzip_member(bytes(range(256)) * 64))
    good[20] ^= 0xFF
    with pytest.raises(FormatError, match="corrupt gzip member at byte 0|truncated"):
        inflate_member(bytes(good), 0, "x")


def test_gzip_member_is_deterministic_and_standard() -> None:
    payload = b"some text " * 5000
    a = gzip_member(payload)
    assert a == gzip_member([payload[:7], payload[7:]])
    assert a[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert gzip.decompress(a) == payload
    assert gzip_member(payload, level=1) != a
    assert gzip.decompress(gzip_member(payload, level=1, engine="isal")) == payload
    assert gzip.decompress(gzip_member(b"")) == b""


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=6))
def test_split_members_recovers_boundaries(payloads: list[bytes]) -> None:
    members = [gzip_member(p, level=1) for p in payloads]
    blob = b"".join(members)
    ranges = split_members(blob, "blob")
    assert [blob[s:e] for s, e in ranges] == members
    assert b"".join(iter_inflate(blob, "blob")) == b"".join(payloads)


def test_highly_compressed_member_is_inflated_in_bounded_pieces() -> None:
    # 64 MiB of zeros compress to ~64 KiB: output must come in pieces of at most OUT_LIMIT
    from builder.deflate.gzipstream import OUT_LIMIT

    size = 64 << 20
    blob = gzip_member(iter([b"\0" * (1 << 20)] * 64), level=1) + gzip_member(b"tail")
    assert split_members(blob, "zeros")[0][1] < len(blob)
    total = 0
    for piece in iter_inflate(blob, "zeros"):
        assert len(piece) <= OUT_LIMIT
        total += len(piece)
    assert total == size + 4
