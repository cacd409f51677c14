"""Every implementation in a whole build of apko's golden fixture (both archs), with the
reference everywhere else (and what it requires): the same image as the reference build
wherever the layer format and compressor setting are the same, the same tree where only the
layer format differs, and spans that carry their attributes."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from typing import Any

from builder.spans import STAGES
from builder.stages.registry import current
from builder.stages.spec import Impl
from tests.conformance.support import GoldenBuilds, profile_for

REFERENCE = {stage: "reference" for stage in STAGES}
# Span attributes every span of a stage carries (beyond `impl`), by stage.
SPAN_ATTRS = {
    "index": {"packages"}, "resolve": {"packages"},
    "fetch": {"requests", "cache_hits", "cache_misses", "bytes_fetched", "bytes_read"},
    "expand": {"block_index", "cache_hits"},
    "layer": {"entries", "output"},
    "compress": {"compressor", "level", "output"},
}


def _diff_ids(build: dict[str, Any]) -> dict[str, list[str]]:
    return {a: m["diff_ids"] for a, m in build["summary"]["manifests"].items()}


def _same_except_layer_and_blob(impl: Impl) -> bool:
    return impl.stage not in ("layer", "compress", "publish")


def test_same_image_as_the_reference(any_impl: Impl, golden_builds: GoldenBuilds) -> None:
    """Any implementation of a stage other than layer and compress leaves every byte of the
    image as the reference makes it (its requirements may pick another layer writer, but
    then only the layer format's bytes may differ: checked below)."""
    if any_impl.stage == "publish":
        return  # publishing is not part of the build (tests/test_registry.py pushes both)
    chosen = profile_for(any_impl)
    ref = golden_builds.build(REFERENCE)
    got = golden_builds.build(chosen)
    writer = current().get("layer", chosen["layer"]).obj
    if _same_except_layer_and_blob(any_impl) and writer.layer_format == "sorted" \
            and chosen["compress"] == "reference":
        assert got["summary"]["index_digest"] == ref["summary"]["index_digest"]
    if writer.layer_format == "sorted":
        assert _diff_ids(got) == _diff_ids(ref)  # compressors never change the tar


def test_layer_writers_of_a_format_agree(layer_impl: Impl, golden_builds: GoldenBuilds
                                         ) -> None:
    reg = current()
    fmt = layer_impl.obj.layer_format
    peers = [i for i in reg.stage("layer").impls if i.obj.layer_format == fmt]
    base = golden_builds.build(profile_for(peers[0]))
    got = golden_builds.build(profile_for(layer_impl))
    assert _diff_ids(got) == _diff_ids(base)


def _blob(build: dict[str, Any], arch: str) -> tuple[bytes, str]:
    result = build["result"]
    art = next(a for a in result.archs if a.arch == arch)
    (layer,) = art.layers
    return layer.path.read_bytes(), layer.media_type


def _tar_of(blob: bytes, media_type: str) -> bytes:
    if media_type.endswith("+gzip"):
        return gzip.decompress(blob)
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress(blob)


def _tree(tar: bytes) -> dict[str, tuple]:
    """Path -> what an unpacker leaves there, last entry wins (as containerd and umoci)."""
    out: dict[str, tuple] = {}
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        for ti in tf:
            name = ti.name.rstrip("/")
            content = tf.extractfile(ti).read() if ti.isreg() else b""  # type: ignore[union-attr]
            out[name] = (ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.linkname,
                         hashlib.sha256(content).hexdigest(), ti.devmajor, ti.devminor)
            if ti.isdir():  # a directory entry replaces no contents
                continue
            for k in [k for k in out if k.startswith(name + "/")]:
                del out[k]
    return out


def test_every_layer_format_gives_the_same_tree(layer_impl: Impl, golden_builds: GoldenBuilds
                                                ) -> None:
    ref = golden_builds.build(REFERENCE)
    got = golden_builds.build(profile_for(layer_impl))
    for arch, ids in _diff_ids(got).items():
        blob, media = _blob(got, arch)
        tar = _tar_of(blob, media)
        assert "sha256:" + hashlib.sha256(tar).hexdigest() == ids[0]
        ref_tar = _tar_of(*_blob(ref, arch))
        assert _tree(tar) == _tree(ref_tar)
        assert len(_tree(tar)) > 10


def test_compressors_change_only_the_blob(compress_impl: Impl, golden_builds: GoldenBuilds
                                          ) -> None:
    chosen = profile_for(compress_impl)
    got = golden_builds.build(chosen)
    ref = golden_builds.build(REFERENCE)
    assert _diff_ids(got) == _diff_ids(ref)
    for arch, m in got["summary"]["manifests"].items():
        (layer,) = m["layers"]
        assert layer["media_type"] == compress_impl.obj.media_type
        blob, media = _blob(got, arch)
        assert layer["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
        assert _tar_of(blob, media) == _tar_of(*_blob(ref, arch))


def test_spans_carry_their_attributes(any_impl: Impl, golden_builds: GoldenBuilds) -> None:
    if any_impl.stage == "publish":
        return  # no publish span in a build
    chosen = profile_for(any_impl)
    build = golden_builds.build(chosen)
    spans = build["spans"]
    assert spans[0]["name"] == "startup" and spans[0]["wall_s"] > 0  # process start to config
    spans = spans[1:]
    seen = {s["name"] for s in spans}
    assert seen == set(STAGES) - {"publish"}
    writer = current().get("layer", chosen["layer"]).obj
    for s in spans:
        assert s["attrs"]["impl"] == chosen[s["name"]], s
        assert s["wall_s"] >= 0 and s["cpu_s"] >= 0 and s["bytes_in"] >= 0
        missing = SPAN_ATTRS.get(s["name"], set()) - set(s["attrs"])
        assert not missing, (s["name"], missing)
        if s["name"] in ("layer", "compress"):
            assert s["attrs"]["output"] == writer.output
        if s["name"] == "expand":
            assert s["attrs"]["block_index"] == writer.needs_block_index
    per_arch = [s for s in spans if s["arch"]]
    assert {s["arch"] for s in per_arch} == {"x86_64", "aarch64"}
