"""apko's path rule: relative `contents.keyring`, `contents.repositories`, `include` and
`--keyring-append`/`--repository-append` paths resolve against the working directory. apko's
own golden test, laid out and run as apko's TestBuild runs it (config at
`testdata/apko.yaml`, entries `./testdata/...`, cwd above `testdata/`, its two annotations),
gives apko's diffIDs and config digests; `--workdir` names another directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.cli import main
from builder.config import load_config
from tests.helpers import (
    GOLDEN,
    GOLDEN_ANNOTATION_ARGS,
    GOLDEN_CONFIGS,
    GOLDEN_DIFF_IDS,
    golden_workdir,
)


def _build(args: list[str], spans: Path) -> dict:
    assert main(["build", *args, "--spans", str(spans)]) == 0
    return json.loads(spans.read_text())["image"]


def test_apkos_golden_test_as_apko_runs_it(tmp_path, golden_cache, monkeypatch):
    monkeypatch.chdir(golden_workdir(tmp_path))
    image = _build(["testdata/apko.yaml", "golden:latest", "out", *GOLDEN_ANNOTATION_ARGS,
                    "--cache-dir", str(golden_cache)], tmp_path / "spans.json")
    for arch in ("amd64", "arm64"):
        assert image["manifests"][arch]["diff_ids"] == [GOLDEN_DIFF_IDS[arch]]
        assert image["manifests"][arch]["config_digest"] == GOLDEN_CONFIGS[arch]


def test_a_path_not_found_names_it_as_written_and_the_path_tried(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.chdir(tmp_path)  # no testdata/ here
    rc = main(["build", str(GOLDEN / "apko.yaml"), "golden:latest", str(tmp_path / "out"),
               "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    assert "./testdata/" in err and str(tmp_path / "testdata") in err


def test_workdir_names_the_directory_paths_resolve_against(tmp_path, golden_cache):
    image = _build([str(GOLDEN / "apko.yaml"), "golden:latest", str(tmp_path / "out"),
                    "--workdir", str(golden_workdir(tmp_path)), *GOLDEN_ANNOTATION_ARGS,
                    "--cache-dir", str(golden_cache)], tmp_path / "spans.json")
    assert image["manifests"]["amd64"]["diff_ids"] == [GOLDEN_DIFF_IDS["amd64"]]


@pytest.mark.parametrize("where", ["cwd", "workdir"])
def test_include_and_appended_paths_follow_the_same_rule(tmp_path, monkeypatch, where):
    base = tmp_path / "base"
    (base / "conf").mkdir(parents=True)
    (base / "conf" / "common.yaml").write_text("contents: {packages: [a]}\n")
    cfg = tmp_path / "elsewhere" / "apko.yaml"
    cfg.parent.mkdir()
    cfg.write_text("include: conf/common.yaml\ncontents: {keyring: [keys/k.pub]}\n")
    if where == "cwd":
        monkeypatch.chdir(base)
        loaded = load_config(cfg)
    else:
        monkeypatch.chdir(tmp_path)
        loaded = load_config(cfg, workdir=base)
    assert loaded.contents.packages == ["a"]
    assert loaded.resolve_local("keys/k.pub") == str(base / "keys" / "k.pub")
    assert loaded.resolve_local("./repo") == str(base / "repo")


def test_a_missing_include_names_the_path_tried(tmp_path, monkeypatch):
    from builder.errors import ConfigError

    cfg = tmp_path / "apko.yaml"
    cfg.write_text("include: common.yaml\n")
    (tmp_path / "common.yaml").write_text("contents: {packages: [a]}\n")
    monkeypatch.chdir(tmp_path.parent)  # beside the config is not where apko looks
    with pytest.raises(ConfigError, match=rf"common.yaml \(tried {tmp_path.parent}/common.yaml\)"):
        load_config(cfg)
