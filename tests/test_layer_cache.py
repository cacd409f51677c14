"""The layer cache (`--layer-cache`, builder/layercache.py): the same digests as without it;
a rebuild reuses every layer; two images share the package layers they have in common; a
package layer changes key only when its own content does; a damaged record or blob is
dropped and the layer built again, never reused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from builder.pipeline import build
from builder.plan import BuildOptions
from builder.spans import SpanRecorder
from builder.stages.profiles import parse_impl
from perf.workloads import Workload
from tests.helpers import layered_variant


def _build(config: Path, cache: Path, work: Path, impl: str,
           layer_cache: bool = True) -> tuple[dict, list[dict]]:
    """The summary and the layer spans ({layer, cache, key}) of one build."""
    rec = SpanRecorder()
    work.mkdir(parents=True)
    opts = BuildOptions(config=str(config), cache_dir=str(cache), impl=parse_impl(impl),
                        sbom=False, layer_cache=layer_cache)
    summary = build(opts, work, rec).summary()
    layers = [{"layer": s.attrs.get("layer"), "cache": s.attrs["layer_cache"],
               "key": s.attrs["layer_key"]}
              for s in rec.spans if s.name == "layer" and s.attrs.get("output") == "cache"]
    return summary, layers


@pytest.mark.parametrize("impl", ["fast", "stitched", "reference", "fast,compress=zstd:3"])
@pytest.mark.parametrize("budget", [None, 5])
def test_same_image_and_a_rebuild_reuses_every_layer(small_workload: Workload, tmp_path: Path,
                                                     impl: str, budget: int | None) -> None:
    if impl == "stitched" and budget is not None:
        impl = "fast,layer=stitched"  # stitched layered images: the stitched writer per part
    cfg = layered_variant(tmp_path, small_workload.config_path, "img", budget=budget)
    plain, _ = _build(cfg, tmp_path / "c0", tmp_path / "w0", impl, layer_cache=False)
    first, made = _build(cfg, tmp_path / "c1", tmp_path / "w1", impl)
    again, reused = _build(cfg, tmp_path / "c1", tmp_path / "w2", impl)
    assert first == plain and again == plain
    assert {m["cache"] for m in made} == {"miss"} and {r["cache"] for r in reused} == {"hit"}
    assert len(made) == (1 if budget is None else 6)


def test_images_share_the_package_layers_they_have_in_common(small_workload: Workload,
                                                            tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # A budget above the number of origins: every origin keeps a layer of its own in both.
    big = layered_variant(tmp_path, small_workload.config_path, "big", budget=40)
    small = layered_variant(tmp_path, small_workload.config_path, "small",
                    ["ca-certificates-bundle", "synth-baselayout", "busybox"], budget=40)
    big_summary, big_layers = _build(big, cache, tmp_path / "w1", "fast")
    small_summary, small_layers = _build(small, cache, tmp_path / "w2", "fast")
    fresh, _ = _build(small, tmp_path / "fresh", tmp_path / "w3", "fast", layer_cache=False)
    assert small_summary == fresh  # reuse never changes the image
    hits = [s for s in small_layers if s["cache"] == "hit"]
    assert hits, small_layers  # some package layer of the small image was made for the big one
    assert {h["key"] for h in hits} <= {b["key"] for b in big_layers}
    assert small_layers[-1]["cache"] == "miss"  # the top layer is the image's own


def test_a_package_layer_key_changes_with_its_own_content_only(small_workload: Workload,
                                                              tmp_path: Path) -> None:
    """Dropping one package changes the keys of the layers whose entries change (its own,
    the top) and leaves the others' alone."""
    doc = yaml.safe_load(small_workload.config_path.read_text())
    every = doc["contents"]["packages"]
    config = small_workload.config_path
    _, full = _build(layered_variant(tmp_path, config, "a", budget=10), tmp_path / "c",
                     tmp_path / "w1", "fast")
    _, fewer = _build(layered_variant(tmp_path, config, "b", [p for p in every if p != "git"],
                                      budget=10), tmp_path / "c", tmp_path / "w2", "fast")
    shared = {s["key"] for s in full} & {s["key"] for s in fewer}
    assert shared and len(shared) < len(full)


@pytest.mark.parametrize("damage", ["blob byte", "blob missing", "record garbage"])
def test_damage_is_never_reused(small_workload: Workload, tmp_path: Path,
                                caplog: pytest.LogCaptureFixture, damage: str) -> None:
    import json

    cache = tmp_path / "cache"
    cfg = layered_variant(tmp_path, small_workload.config_path, "img", budget=None)
    first, made = _build(cfg, cache, tmp_path / "w1", "fast")
    record = next((cache / "v1" / "layers").glob("*/*.json"))
    blob = cache / "v1" / "blobs" / "sha256" / json.loads(record.read_text())["digest"][7:]
    if damage == "blob byte":
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
    elif damage == "blob missing":
        blob.unlink()
    else:
        record.write_text("{not json")
    again, layers = _build(cfg, cache, tmp_path / "w2", "fast")
    assert again == first and [s["cache"] for s in layers] == ["miss"]
    assert "layer cache" in caplog.text and "building the layer again" in caplog.text
    third, layers = _build(cfg, cache, tmp_path / "w3", "fast")  # recorded again, whole
    assert third == first and [s["cache"] for s in layers] == ["hit"]


@pytest.mark.parametrize("impl", ["fast", "fast,layer=stitched"])
def test_a_catalogue_on_one_cache_equals_fresh_builds(small_workload: Workload, tmp_path: Path,
                                                      impl: str) -> None:
    """Images of overlapping package sets built one after another on one cache, each
    against a build without the layer cache: reuse may only ever give the same bytes."""
    import random

    doc = yaml.safe_load(small_workload.config_path.read_text())
    every = doc["contents"]["packages"]
    rng = random.Random(7)
    subsets = [every, every[:3], every[2:], *(rng.sample(every, k) for k in (2, 4, 5))]
    shared = tmp_path / "shared"
    hits = 0
    for i, pkgs in enumerate(subsets):
        cfg = layered_variant(tmp_path, small_workload.config_path, f"img{i}", pkgs, budget=40)
        reused, layers = _build(cfg, shared, tmp_path / f"s{i}", impl)
        fresh, _ = _build(cfg, tmp_path / f"fresh{i}", tmp_path / f"f{i}", impl,
                          layer_cache=False)
        assert reused == fresh, pkgs
        hits += sum(1 for s in layers if s["cache"] == "hit")
    assert hits >= len(subsets) - 1  # every image after the first reused something


def test_changed_layer_code_misses(small_workload: Workload, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Another version of the layer-writing code (or of a compression library) never reuses
    a layer the old one made."""
    import builder.layercache as lc

    cfg = layered_variant(tmp_path, small_workload.config_path, "img", budget=None)
    _, made = _build(cfg, tmp_path / "c", tmp_path / "w1", "fast")
    monkeypatch.setattr(lc, "code_fingerprint", lambda: "another writer")
    _, after = _build(cfg, tmp_path / "c", tmp_path / "w2", "fast")
    assert [s["cache"] for s in after] == ["miss"] and after[0]["key"] != made[0]["key"]
