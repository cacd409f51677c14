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
