"""`apkimage build-many`: many images on one cache, each OCI layout the one `apkimage build`
makes of its config; names that would collide and a failing config are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.cli import main
from perf.workloads import Workload
from tests.helpers import small_world


def test_images_equal_single_builds(small_workload: Workload, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    configs = small_world(tmp_path, small_workload.config_path, 3)
    rc = main(["build-many", *map(str, configs), "--out-dir", str(tmp_path / "many"),
               "--impl", "fast", "--layer-cache", "--cache-dir", str(tmp_path / "c"), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"]["images"] == 3 and doc["total"]["cpu_s"] > 0
    (tmp_path / "single").mkdir()
    for cfg, img in zip(configs, doc["images"], strict=True):
        out = tmp_path / "single" / cfg.stem
        assert main(["build", str(cfg), f"{cfg.stem}:latest", str(out), "--impl", "fast",
                     "--cache-dir", str(tmp_path / "c2"), "--json"]) == 0
        single = json.loads(capsys.readouterr().out)
        assert img["index_digest"] == single["index_digest"], cfg
        assert img["out"] == str(tmp_path / "many" / cfg.stem)
        layout = json.loads((Path(img["out"]) / "index.json").read_text())
        assert {m["annotations"]["org.opencontainers.image.ref.name"]
                for m in layout["manifests"]} >= {f"{cfg.stem}:latest"}
    hits = [s["attrs"]["layer_cache"] for s in doc["images"][2]["spans"]["spans"]
            if s["name"] == "layer" and s["attrs"].get("output") == "cache"]
    assert "hit" in hits  # the third image reused layers the first made


def test_colliding_names_and_a_bad_config_are_named(small_workload: Workload, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    configs = small_world(tmp_path, small_workload.config_path, 3)
    (tmp_path / "other").mkdir()
    twin = tmp_path / "other" / "all.yaml"
    twin.write_text(configs[0].read_text())
    assert main(["build-many", str(configs[0]), str(twin), "--out-dir",
                 str(tmp_path / "o")]) == 1
    assert "same name as" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(configs[1].read_text().replace("busybox", "no-such-package"))
    assert main(["build-many", str(configs[1]), str(bad), "--out-dir", str(tmp_path / "o"),
                 "--cache-dir", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "no-such-package" in err
    assert (tmp_path / "o" / "base" / "index.json").is_file()  # the image before it stands
    assert not (tmp_path / "o" / "bad").exists()


def test_reused_layers_are_linked_between_the_runs_layouts(
        small_workload: Workload, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A layer the layer cache gives a later image is the earlier layout's file (one inode
    across the run's layouts), never the cache's own."""
    configs = small_world(tmp_path, small_workload.config_path, 3)
    cache = tmp_path / "c"
    assert main(["build-many", *map(str, configs), "--out-dir", str(tmp_path / "many"),
                 "--impl", "stitched", "--layer-cache", "--cache-dir", str(cache),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    linked = [s for s in doc["images"][2]["spans"]["spans"]
              if s["name"] == "layer" and s["attrs"].get("linked")]
    assert linked, "the third image linked none of the layers the first two made"
    inodes: dict[str, set[int]] = {}
    for img in doc["images"]:
        for blob in (Path(img["out"]) / "blobs" / "sha256").iterdir():
            inodes.setdefault(blob.name, set()).add(blob.stat().st_ino)
    shared = [h for h, ino in inodes.items() if len(ino) == 1
              and sum(1 for img in doc["images"]
                      if (Path(img["out"]) / "blobs" / "sha256" / h).exists()) > 1]
    assert shared
    cached = list((cache / "v1" / "blobs" / "sha256").iterdir())
    cache_inodes = {p.stat().st_ino for p in cached}
    assert not cache_inodes & {i for h in shared for i in inodes[h]}


def test_known_blobs_vouch_only_for_unchanged_files(tmp_path: Path) -> None:
    from builder.layercache import KnownBlobs

    blob = tmp_path / "blob"
    blob.write_bytes(b"layer bytes")
    known = KnownBlobs()
    known.add("sha256:x", blob)
    assert known.find("sha256:x", 11) == blob
    assert known.find("sha256:x", 12) is None  # not the size the record says: dropped
    known.add("sha256:x", blob)
    blob.write_bytes(b"layer BYTES")
    assert known.find("sha256:x", 11) is None
    assert known.find("sha256:y", 11) is None
