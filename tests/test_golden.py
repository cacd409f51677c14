"""Acceptance: `apkimage build` of apko's golden fixture reproduces apko's diffIDs, config
digests and the text files of the golden layers, byte for byte; builds are reproducible."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from builder.cli import main
from tests.conftest import GOLDEN

DIFF_IDS = {
    "amd64": "sha256:20f698463c2755b6dc42b7d07e959ed7455a06e7367d507e829a315898f21a01",
    "arm64": "sha256:ca5e16c7c944d764863cb1a4286e668e72d6d87ef9ddd82337b19d87715bae7e",
}
CONFIGS = {
    "amd64": "sha256:6c815259150f37d000417f9a93f41bddf74dff905c745986069d4b03e954ac1d",
    "arm64": "sha256:fbb854f9d5a601a36c4dc8cc82e5b21e91b11cdd4aab5035340e4f517c5a8eb1",
}
ANNOTATIONS = ["--annotations", "org.opencontainers.image.title:Title",
               "--annotations", "org.opencontainers.image.vendor:Vendor"]
COMPARED_FILES = ["usr/lib/apk/db/installed", "etc/apko.json", "etc/apk/world",
                  "etc/apk/repositories", "etc/apk/arch", "usr/lib/apk/db/scripts.tar"]


def golden_workdir(tmp_path: Path) -> Path:
    """apko's test resolves `./testdata/...` against its working directory: give it one."""
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "testdata").symlink_to(GOLDEN)
    return wd


def build_golden(tmp_path: Path, out: Path, *extra: str) -> dict:
    wd = golden_workdir(tmp_path) if not (tmp_path / "wd").exists() else tmp_path / "wd"
    spans = tmp_path / f"spans-{out.name}.json"
    rc = main(["build", str(GOLDEN / "apko.yaml"), "golden:latest", str(out), "--workdir",
               str(wd), "--cache-dir", str(tmp_path / "cache"), "--spans", str(spans),
               *ANNOTATIONS, *extra])
    assert rc == 0
    return json.loads(spans.read_text())


def layer_files(blob: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tf:
        for ti in tf:
            if ti.isfile():
                out[ti.name] = tf.extractfile(ti).read()  # type: ignore[union-attr]
    return out


def golden_layers() -> dict[str, bytes]:
    """OCI arch -> golden layer blob, found through golden/index.json -> manifests."""
    blobs = GOLDEN / "golden" / "blobs" / "sha256"
    index = json.loads((GOLDEN / "golden" / "index.json").read_text())
    out = {}
    for m in index["manifests"]:
        manifest = json.loads((blobs / m["digest"].split(":")[1]).read_text())
        layer = manifest["layers"][0]["digest"].split(":")[1]
        out[m["platform"]["architecture"]] = (blobs / layer).read_bytes()
    return out


def test_golden_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    out = tmp_path / "out"
    doc = build_golden(tmp_path, out)
    image = doc["image"]
    for arch in ("amd64", "arm64"):
        assert image["manifests"][arch]["diff_ids"] == [DIFF_IDS[arch]]
        assert image["manifests"][arch]["config_digest"] == CONFIGS[arch]
    assert image["impl"]["compress"] == "reference"
    # Every stage ran in a span, per arch where it is per arch.
    names = {(s["name"], s["arch"]) for s in doc["spans"]}
    for stage in ("index", "resolve", "fetch", "expand", "install", "mutate", "layer",
                  "compress"):
        assert (stage, "x86_64") in names and (stage, "aarch64") in names
    assert ("config", "") in names and ("oci", "") in names
    # The layout on disk: index.json is the index whose digest was reported.
    blobs = out / "blobs" / "sha256"
    index_bytes = (out / "index.json").read_bytes()
    assert image["index_digest"] == "sha256:" + __import__("hashlib").sha256(
        index_bytes).hexdigest()
    gold = golden_layers()
    for arch, info in image["manifests"].items():
        ours = layer_files((blobs / info["layers"][0]["digest"].split(":")[1]).read_bytes())
        theirs = layer_files(gold[arch])
        assert sorted(ours) == sorted(theirs)
        for name in COMPARED_FILES:
            assert ours[name] == theirs[name], f"{arch}: {name} differs"
        cfg = json.loads((blobs / info["config_digest"].split(":")[1]).read_text())
        assert cfg["rootfs"]["diff_ids"] == [DIFF_IDS[arch]]


def test_reproducible_and_epoch_sensitive(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    a = build_golden(tmp_path, tmp_path / "a")["image"]
    b = build_golden(tmp_path, tmp_path / "b")["image"]
    assert a == b
    assert (tmp_path / "a" / "index.json").read_bytes() == \
        (tmp_path / "b" / "index.json").read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    c = build_golden(tmp_path, tmp_path / "c")["image"]
    assert c["index_digest"] != a["index_digest"]
    for arch in ("amd64", "arm64"):
        assert c["manifests"][arch]["config_digest"] != a["manifests"][arch]["config_digest"]
        # scripts.tar is empty here and apko-made files have mtime 0: the layer itself is
        # unchanged, only the image time moves.
        assert c["manifests"][arch]["diff_ids"] == a["manifests"][arch]["diff_ids"]
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    d = build_golden(tmp_path, tmp_path / "d", "--build-date", "2023-11-14T22:13:20Z")["image"]
    assert d["index_digest"] == c["index_digest"]


def test_docker_tarball_and_compress_override(tmp_path: Path) -> None:
    out = tmp_path / "img.tar"
    doc = build_golden(tmp_path, out, "--arch", "x86_64", "--impl", "reference,compress=zlib:9")
    image = doc["image"]
    assert list(image["manifests"]) == ["amd64"]
    assert image["impl"]["compress"] == "zlib:9"
    assert image["manifests"]["amd64"]["diff_ids"] == [DIFF_IDS["amd64"]]
    assert image["manifests"]["amd64"]["config_digest"] == CONFIGS["amd64"]
    with tarfile.open(out) as tf:
        names = tf.getnames()
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert "index.json" in names
    assert manifest[0]["RepoTags"] == ["golden:latest-amd64"]


def test_impl_selection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from builder.stages.profiles import parse_impl

    fast = parse_impl("fast")
    assert fast["fetch"] == "fast" and fast["expand"] == "fast"
    assert parse_impl("fast,fetch=reference")["fetch"] == "reference"
    # An incompatible combination is refused before anything runs, naming both stages.
    rc = main(["build", str(GOLDEN / "apko.yaml"), "t", str(tmp_path / "o"), "--impl",
               "stitched,expand=reference"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "layer=stitched" in err and "expand=reference" in err and "expand=fast" in err
    assert not (tmp_path / "o").exists()
    for bad, needle in [("reference,compress=zlib:12", "no implementation 'zlib:12'"),
                        ("reference,bogus=x", "unknown stage"), ("turbo", "unknown profile"),
                        ("compress=zlib:9,reference", "profile must come first"),
                        ("fast,layer=stitched,install=reference", "install=reference")]:
        with pytest.raises(Exception, match=needle):
            parse_impl(bad)


def test_fast_profile_same_bytes(tmp_path: Path) -> None:
    """Invariant 1: the fast profile gives the same diffIDs and config digests; with the
    reference compressor also the same blobs, manifests and index."""
    ref = build_golden(tmp_path, tmp_path / "ref")["image"]
    fast = build_golden(tmp_path, tmp_path / "fast", "--impl", "fast")["image"]
    for arch, m in ref["manifests"].items():
        assert fast["manifests"][arch]["diff_ids"] == m["diff_ids"]
        assert fast["manifests"][arch]["config_digest"] == m["config_digest"]
        # isal, not zlib:
        assert fast["manifests"][arch]["layers"][0]["digest"] != m["layers"][0]["digest"]
    same = build_golden(tmp_path, tmp_path / "same", "--impl", "fast,compress=reference")
    assert same["image"]["index_digest"] == ref["index_digest"]


def test_sboms_match_golden_up_to_layer_compression(tmp_path: Path) -> None:
    """Our layer gzip differs from apko's (different compressor), so every digest above the
    diffID differs; with those digests mapped to the golden ones the SBOMs are identical."""
    sboms = tmp_path / "sboms"
    image = build_golden(tmp_path, tmp_path / "out", "--sbom-path", str(sboms))["image"]
    golden_dir = GOLDEN / "golden"
    gindex = json.loads((golden_dir / "index.json").read_text())
    mapping = {image["index_digest"]: "sha256:" + __import__("hashlib").sha256(
        (golden_dir / "index.json").read_bytes()).hexdigest()}
    for m in gindex["manifests"]:
        arch = m["platform"]["architecture"]
        gman = json.loads((golden_dir / "blobs/sha256" / m["digest"][7:]).read_text())
        mapping[image["manifests"][arch]["digest"]] = m["digest"]
        mapping[image["manifests"][arch]["layers"][0]["digest"]] = gman["layers"][0]["digest"]
    for name in ("sbom-x86_64.spdx.json", "sbom-aarch64.spdx.json", "sbom-index.spdx.json"):
        ours = (sboms / name).read_text()
        for a, b in mapping.items():
            ours = ours.replace(a[7:], b[7:])
        assert ours == (golden_dir / "sboms" / name).read_text(), name
