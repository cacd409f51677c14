"""apko's lockfile: `apkimage lock` in apko's test layout (config found through
`--include-paths testdata`, cwd above it) writes apko's golden `apko.lock.json` byte for
byte; `build --lockfile` installs exactly the locked packages with no APKINDEX, verifies
every section, and refuses a lock made from another config."""

from __future__ import annotations

import json

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


