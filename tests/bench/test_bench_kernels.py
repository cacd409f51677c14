"""Micro-benchmarks of the hot kernels (pytest-benchmark; `make bench`): each also checks its
result, so under `make test` (xdist disables timing) they run once as tests.

Compare two runs with `make bench` on each side, then
`.venv/bin/pytest-benchmark compare --group-by=name 0001 0002` (or `make bench
BENCH_ARGS=--benchmark-compare`)."""

from __future__ import annotations

import gzip
import io
import random
import tarfile
import zlib
from pathlib import Path

import pytest

from builder.apk.installed_db import FileRecord, format_record
from builder.apk.model import Package, parse_index_text
from builder.apk.tarindex import index_tar
from builder.deflate.block_index import scan_blocks
from builder.deflate.sink import GzipSink
from builder.deflate.splice import Source, Stitcher
from builder.expand.codecs import tar_index_from_json, tar_index_to_json
from builder.resolve import resolve
from tests.helpers import FIXTURES

TZDATA = FIXTURES / "apk/melange-local/tzdata-2023c-r0.multimember.x86_64.apk"
ALPINE = FIXTURES / "indexes" / "alpine-v3.16-main-x86_64.APKINDEX.tar.gz"


def _members(raw: bytes) -> list[bytes]:
    parts, rest = [], raw
    while rest:
        d = zlib.decompressobj(31)
        parts.append(d.decompress(rest))
        rest = d.unused_data
    return parts


@pytest.fixture(scope="module")
def tzdata() -> tuple[bytes, list[bytes]]:
    raw = TZDATA.read_bytes()
    return raw, _members(raw)


def test_z_block_scan(benchmark, tzdata):
    raw, members = tzdata
    index = benchmark(scan_blocks, raw, "tzdata")
    assert len(index.members) == len(members)
    assert index.size == sum(map(len, members))


def test_stitch_real_multimember_package(benchmark, tzdata):
    raw, members = tzdata
    src = Source(compressed=raw, index=scan_blocks(raw, "tzdata"),
                 uncompressed=b"".join(members), name="tzdata")
    start, end = src.index.members[2].out_start, src.index.size - 1024

    def stitch() -> bytes:
        out = io.BytesIO()
        st = Stitcher(out.write, 6, "zlib")
        st.reuse(src, start, end)
        st.literal(b"\0" * 1024)
        st.finish()
        return out.getvalue()

    blob = benchmark(stitch)
    assert gzip.decompress(blob) == bytes(src.uncompressed[start:end]) + b"\0" * 1024


@pytest.fixture(scope="module")
def tzdata_data_tar(tzdata) -> bytes:
    return b"".join(tzdata[1][2:])  # signature, control, then the data tar's members


def test_tar_index(benchmark, tzdata_data_tar):
    index = benchmark(index_tar, tzdata_data_tar, "tzdata data.tar")
    with tarfile.open(fileobj=io.BytesIO(tzdata_data_tar)) as tf:
        assert len(index.entries) == len(tf.getmembers())


def test_expand_cache_tar_index_load(benchmark, tzdata_data_tar):
    fresh = index_tar(tzdata_data_tar, "tzdata data.tar")
    cached = tar_index_to_json(fresh)
    assert benchmark(tar_index_from_json, cached) == fresh


def test_installed_db_writer(benchmark):
    rng = random.Random(1)
    files = [FileRecord(d, True, 0o755) for d in ("usr", "usr/share", "usr/share/pkg")]
    for d in range(40):  # tar order: each directory, then its files
        files.append(FileRecord(f"usr/share/pkg/d{d}", True, 0o755))
        files += [FileRecord(f"usr/share/pkg/d{d}/f{i}.dat", False, 0o644,
                             checksum=f"{rng.getrandbits(160):040x}") for i in range(125)]
    pkg = Package(name="bench", version="1.0-r0", arch="x86_64", checksum="Q1" + "A" * 27 + "=")
    record = benchmark(format_record, pkg, files)
    text = record.decode()
    assert text.startswith("P:bench\nV:1.0-r0\n") and text.endswith("\n\n")
    assert text.count("\nR:") == 5000 and text.count("\nF:") == 43


@pytest.fixture(scope="module")
def alpine_packages() -> list[Package]:
    with tarfile.open(ALPINE) as tf:
        member = tf.extractfile("APKINDEX")
        assert member is not None
        return parse_index_text(member.read().decode(), source=str(ALPINE))


def test_resolver_on_a_real_alpine_index(benchmark, alpine_packages):
    assert len(alpine_packages) > 4000
    result = benchmark(resolve, ["alpine-base", "curl", "strace"], alpine_packages, "x86_64")
    got = {p.name: p.version for p in result}
    assert got["curl"] == "7.83.1-r4" and got["musl"] == "1.2.3-r2"


def test_parallel_gzip_writer(benchmark, tmp_path: Path):
    rng = random.Random(2)
    words = [bytes(rng.choice(b"abcdefghij_.") for _ in range(rng.randint(2, 10)))
             for _ in range(500)]
    data = b" ".join(rng.choice(words) for _ in range(1_500_000))[: 8 << 20]
    out = tmp_path / "layer.gz"

    def write():
        sink = GzipSink(out, "isal", 1, threads=2, block_size=1 << 20)
        view = memoryview(data)
        for off in range(0, len(data), 1 << 20):
            sink.write(view[off:off + (1 << 20)])
        return sink.close()

    benchmark(write)
    assert gzip.decompress(out.read_bytes()) == data
