"""Every compressor setting: the same bytes through a file and through a stream however the
stream is cut, a blob that decompresses back to its input as exactly one gzip member or zstd
frame, truthful results, clean failure."""

from __future__ import annotations

import hashlib
import random
import zlib
from pathlib import Path

import pytest

from builder.stages.spec import Impl

MEDIA = {"application/vnd.oci.image.layer.v1.tar+gzip": ".gz",
         "application/vnd.oci.image.layer.v1.tar+zstd": ".zst"}


def _sample(n: int, seed: int = 3) -> bytes:
    """Compressible, non-trivial bytes (words from a small random vocabulary)."""
    rnd = random.Random(seed)
    words = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 12))) for _ in range(300)]
    return b"".join(rnd.choice(words) for _ in range(n // 6))[:n]


def _decompress(media_type: str, blob: bytes) -> bytes:
    """The one member/frame's content; fails on trailing data or a second member."""
    if media_type.endswith("+gzip"):
        d = zlib.decompressobj(31)
        out = d.decompress(blob) + d.flush()
        assert d.eof and d.unused_data == b"", "not exactly one gzip member"
        return out
    import zstandard

    d = zstandard.ZstdDecompressor().decompressobj()
    out = d.decompress(blob)
    assert d.eof and d.unused_data == b"", "not exactly one zstd frame"
    return out


def _stream(impl: Impl, data: bytes, out: Path, pieces: list[int]) -> object:
    sink = impl.obj.sink(out)
    pos, i = 0, 0
    while pos < len(data):
        n = pieces[i % len(pieces)]
        sink.write(bytearray(data[pos:pos + n]))  # fresh buffers, as producers hand over
        pos, i = pos + n, i + 1
    return sink.close()


def test_file_and_stream_give_the_same_bytes(compress_impl: Impl, tmp_path: Path) -> None:
    data = _sample(2_600_000)
    (tmp_path / "in.tar").write_bytes(data)
    whole = compress_impl.obj.compress_file(tmp_path / "in.tar", tmp_path / "whole")
    raw = (tmp_path / "whole").read_bytes()
    assert whole.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert whole.size == len(raw) and whole.path == tmp_path / "whole"
    for pieces in ([1 << 20], [1, 511, 40_000, 3 << 19], [999_999]):
        got = _stream(compress_impl, data, tmp_path / "s", pieces)
        assert (got.digest, got.size, got.size_in) == (whole.digest, whole.size, len(data))
    assert _decompress(compress_impl.obj.media_type, raw) == data


def test_empty_input(compress_impl: Impl, tmp_path: Path) -> None:
    res = compress_impl.obj.sink(tmp_path / "e").close()
    raw = (tmp_path / "e").read_bytes()
    assert res.size == len(raw) and res.size_in == 0
    assert _decompress(compress_impl.obj.media_type, raw) == b""


def test_media_type_suffix_engine_and_settings(compress_impl: Impl) -> None:
    comp = compress_impl.obj
    assert MEDIA.get(comp.media_type) == comp.suffix
    assert (comp.deflate_engine is not None) == comp.media_type.endswith("+gzip")
    assert ("deflate" in compress_impl.provides) == (comp.deflate_engine is not None)
    settings = comp.settings()
    assert {"compressor", "level"} <= set(settings)
    assert all(isinstance(v, str) for v in settings.values())  # the harness sums numbers


def test_deterministic_across_runs(compress_impl: Impl, tmp_path: Path) -> None:
    data = _sample(1_200_000, seed=9)
    a = _stream(compress_impl, data, tmp_path / "a", [65_536])
    b = _stream(compress_impl, data, tmp_path / "b", [65_536])
    assert a.digest == b.digest


def test_abort_leaves_no_output(compress_impl: Impl, tmp_path: Path) -> None:
    out = tmp_path / "x"
    with pytest.raises(RuntimeError), compress_impl.obj.sink(out) as sink:
        sink.write(_sample(300_000))
        raise RuntimeError("the producer failed")
    assert not out.exists()
