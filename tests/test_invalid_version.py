"""A package whose version is not a valid apk version (a real melange package ships `libzstd1`
`1.5.7-r1-r1`): apk-tools reads it from an index and installs it, but refuses
`name=<invalid>` as a dependency. The build locks it by checksum instead, warns naming the
package and the index, and keeps apko's `name=version` in the image; a user who writes the
invalid version as a constraint gets an error naming their config field."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from builder.apk.writer import DataEntry, build_apk
from builder.cli import main
from builder.oci.layout import read_image_index
from tests.helpers import repo_from_apks

BAD = "1.5.7-r1-r1"


def _apk(name: str, version: str) -> bytes:
    info = {"pkgname": [name], "pkgver": [version], "arch": ["x86_64"],
            "builddate": ["1700000000"], "license": ["MIT"], "origin": [name]}
    return build_apk(info, [DataEntry(f"usr/lib/{name}.so", data=b"lib " + name.encode())], None,
                     "none", level=1)


@pytest.fixture
def repo(tmp_path: Path, signing_key: tuple[bytes, bytes]) -> Path:
    return repo_from_apks(tmp_path, {"libzstd1.apk": _apk("libzstd1", BAD),
                                     "zlib.apk": _apk("zlib", "1.3-r0")}, signing_key)


@pytest.mark.parametrize("impl", ["reference", "fast", "stitched"])
def test_a_package_with_an_invalid_version_builds_and_is_named(repo, tmp_path, impl, caplog):
    out, spans = tmp_path / f"out-{impl}", tmp_path / f"spans-{impl}.json"
    with caplog.at_level(logging.WARNING):
        rc = main(["build", str(repo), "t:latest", str(out), "--impl", impl,
                   "--cache-dir", str(tmp_path / "cache"), "--spans", str(spans)])
    assert rc == 0
    warned = [r.getMessage() for r in caplog.records if BAD in r.getMessage()]
    assert warned and "libzstd1" in warned[0] and str(tmp_path / "repo") in warned[0]
    assert "not a valid apk version" in warned[0]
    image = json.loads(spans.read_text())["image"]
    assert image["index_digest"].startswith("sha256:")


def test_reference_and_fast_give_the_same_image(repo, tmp_path):
    """(stitched's layer format is its own: package-ordered)"""
    digests = set()
    for impl in ("reference", "fast"):
        spans = tmp_path / f"spans-{impl}.json"
        assert main(["build", str(repo), "t:latest", str(tmp_path / f"o-{impl}"), "--impl",
                     impl, "--cache-dir", str(tmp_path / "cache"), "--spans", str(spans)]) == 0
        manifests = json.loads(spans.read_text())["image"]["manifests"]
        digests.add(tuple(m["diff_ids"][0] for m in manifests.values()))
    assert len(digests) == 1


def test_the_locked_world_keeps_apkos_name_equals_version(repo, tmp_path, capsys):
    assert main(["resolve", str(repo), "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    assert f"libzstd1={BAD}" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["build", str(repo), "t:latest", str(out), "--cache-dir",
                 str(tmp_path / "cache")]) == 0
    index = json.loads(read_image_index(out))
    manifest = json.loads((out / "blobs" / "sha256" / index["manifests"][0]["digest"][7:])
                          .read_text())
    import tarfile

    layer = out / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    with tarfile.open(layer) as tf:
        apko_json = json.loads(tf.extractfile("etc/apko.json").read())
        installed = tf.extractfile("usr/lib/apk/db/installed").read().decode()
    assert f"libzstd1={BAD}" in apko_json["contents"]["packages"]
    assert f"V:{BAD}\n" in installed


def test_writing_the_invalid_version_yourself_names_your_field(repo, tmp_path, capsys):
    text = repo.read_text().replace("packages: [libzstd1, zlib]", f"packages: [libzstd1={BAD}]")
    assert f"libzstd1={BAD}" in text
    repo.write_text(text)
    rc = main(["build", str(repo), "t:latest", str(tmp_path / "out"), "--cache-dir",
               str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc != 0
    assert f"'libzstd1={BAD}' is not a valid dependency" in err
    assert f"{repo}: contents.packages[0]: " in err
    assert "Traceback" not in err
