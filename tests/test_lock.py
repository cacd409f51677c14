"""apko's lockfile: `apkimage lock` in apko's test layout (config found through
`--include-paths testdata`, cwd above it) writes apko's golden `apko.lock.json` byte for
byte; `build --lockfile` installs exactly the locked packages with no APKINDEX, verifies
every section, and refuses a lock made from another config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder import lock
from builder.cli import main
from tests.helpers import GOLDEN, golden_workdir


def test_lock_equals_apkos_golden(tmp_path, monkeypatch):
    monkeypatch.chdir(golden_workdir(tmp_path))
    out = tmp_path / "apko.lock.json"
    assert main(["lock", "apko.yaml", "--include-paths", "testdata", "-o", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert out.read_bytes() == (GOLDEN / "apko.lock.json").read_bytes()


def test_sections_and_escaping():
    golden = json.loads((GOLDEN / "apko.lock.json").read_text())
    first = golden["contents"]["packages"][0]
    apk = GOLDEN / "packages" / "x86_64" / "pretend-baselayout-1.0.0-r0.apk"
    data = apk.read_bytes()
    assert lock.Sections.of(data, str(apk)).to_json() == {
        k: first[k] for k in ("signature", "control", "data")}
    assert first["checksum"] == "Q1" + first["control"]["checksum"].removeprefix("sha1-")
    assert lock.dumps({"a": "<&>"}) == b'{\n  "a": "\\u003c\\u0026\\u003e"\n}\n'
    assert lock.strip_tag("@local @x ./pkgs") == "./pkgs"
    assert lock.repo_entry("https://dl.example/main/", "x86_64") == {
        "name": "dl.example/main/x86_64",
        "url": "https://dl.example/main/x86_64/APKINDEX.tar.gz", "architecture": "x86_64"}
    assert lock.package_entry("a+b", "1-r0", "x86_64", "./r", lock.Sections.of(
        data, str(apk)), "Q1x")["url"] == "./r/x86_64/a%2Bb-1-r0.apk"


def test_a_config_not_found_names_every_path_tried(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["lock", "nope.yaml", "--include-paths", "inc"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "nope.yaml") in err and str(tmp_path / "inc" / "nope.yaml") in err


@pytest.mark.parametrize("text, says", [
    ("{}", "version: want 'v1'"),
    ('{"version": "v1", "contents": {"packages": [{"name": "a"}]}}',
     r"contents\.packages\[0\]: needs name"),
])
def test_a_bad_lockfile_is_named(tmp_path, text, says):
    from builder.errors import FormatError

    bad = tmp_path / "x.lock.json"
    bad.write_text(text)
    with pytest.raises(FormatError, match=rf"{bad}: (.* )?{says}"):
        lock.read_lock(bad)




def _golden_lock(tmp_path: Path) -> tuple[Path, Path]:
    """(workdir laid out as apko's test, its lockfile)."""
    wd = golden_workdir(tmp_path)
    out = tmp_path / "apko.lock.json"
    out.write_bytes((GOLDEN / "apko.lock.json").read_bytes())
    return wd, out


def _build(wd: Path, out: Path, cache: Path, *extra: str) -> dict:
    spans = out.with_name(out.name + ".spans.json")
    assert main(["build", "testdata/apko.yaml", "g:latest", str(out), "--workdir", str(wd),
                 "--cache-dir", str(cache), "--spans", str(spans), *extra]) == 0
    return json.loads(spans.read_text())


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_build_from_the_lock_is_the_image_built_by_solving(tmp_path, monkeypatch, impl):
    wd, lockfile = _golden_lock(tmp_path)
    monkeypatch.chdir(wd)
    cache = tmp_path / "cache"
    solved = _build(wd, tmp_path / "solved", cache, "--impl", impl)
    locked = _build(wd, tmp_path / "locked", cache, "--impl", impl, "--lockfile", str(lockfile))
    assert locked["image"] == solved["image"]
    spans = {(s["name"], s["attrs"].get("impl")) for s in locked["spans"]}
    assert ("index", "lockfile") in spans and ("resolve", "lockfile") in spans


def test_a_lock_from_another_config_is_refused(tmp_path, monkeypatch, capsys):
    wd, lockfile = _golden_lock(tmp_path)
    cfg = tmp_path / "other.yaml"
    cfg.write_text((GOLDEN / "apko.yaml").read_text() + "cmd: /bin/true\n")
    monkeypatch.chdir(wd)
    rc = main(["build", str(cfg), "g:latest", str(tmp_path / "out"), "--lockfile",
               str(lockfile), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{lockfile}: made from another configuration than {cfg}" in err
    assert "regenerate it with `apkimage lock`" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("section", ["signature", "control", "data"])
def test_a_section_that_does_not_match_the_lock_names_package_and_section(
        tmp_path, monkeypatch, capsys, section):
    wd, lockfile = _golden_lock(tmp_path)
    doc = json.loads(lockfile.read_text())
    pkg = doc["contents"]["packages"][1]  # replayout, x86_64
    pkg[section]["checksum"] = pkg[section]["checksum"][:-6] + "AAAAA="
    if section == "control":
        pkg["checksum"] = "Q1" + pkg["control"]["checksum"].removeprefix("sha1-")
    lockfile.write_text(json.dumps(doc, indent=2) + "\n")
    monkeypatch.chdir(wd)
    rc = main(["build", "testdata/apko.yaml", "g:latest", str(tmp_path / "out"), "--lockfile",
               str(lockfile), "--arch", "x86_64", "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    assert "replayout" in err
    assert not (tmp_path / "out").exists()


def test_lockfile_build_needs_no_apkindex_and_gives_apkos_digests(tmp_path, monkeypatch):
    """apko's layout with the APKINDEX files removed: only the lock says what to install."""
    import shutil

    from tests.helpers import (
        GOLDEN_ANNOTATION_ARGS,
        GOLDEN_CONFIGS,
        GOLDEN_DIFF_IDS,
    )

    wd = tmp_path / "wd"
    shutil.copytree(GOLDEN, wd / "testdata", ignore=shutil.ignore_patterns("golden"))
    for index in (wd / "testdata" / "packages").glob("*/APKINDEX.tar.gz"):
        index.unlink()
    monkeypatch.chdir(wd)
    spans = tmp_path / "spans.json"
    assert main(["build", "testdata/apko.yaml", "golden:latest", str(tmp_path / "out"),
                 "--lockfile", "testdata/apko.lock.json", *GOLDEN_ANNOTATION_ARGS,
                 "--cache-dir", str(tmp_path / "cache"), "--spans", str(spans)]) == 0
    image = json.loads(spans.read_text())["image"]
    for arch in ("amd64", "arm64"):
        assert image["manifests"][arch]["diff_ids"] == [GOLDEN_DIFF_IDS[arch]]
        assert image["manifests"][arch]["config_digest"] == GOLDEN_CONFIGS[arch]
    without_lock = main(["build", "testdata/apko.yaml", "golden:latest", str(tmp_path / "o2"),
                         "--cache-dir", str(tmp_path / "cache2")])
    assert without_lock == 1  # (no index: solving is impossible; the lock did not need one)
