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
from builder.oci.layout import read_image_index
from tests.helpers import GOLDEN, GOLDEN_BLOBS, GOLDEN_CONFIGS, GOLDEN_DIFF_IDS, build_golden

COMPARED_FILES = ["usr/lib/apk/db/installed", "etc/apko.json", "etc/apk/world",
                  "etc/apk/repositories", "etc/apk/arch", "usr/lib/apk/db/scripts.tar"]


def layer_files(blob: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tf:
        for ti in tf:
            if ti.isfile():
                out[ti.name] = tf.extractfile(ti).read()  # type: ignore[union-attr]
    return out


def golden_layers() -> dict[str, bytes]:
    """OCI arch -> golden layer blob, found through golden/index.json -> manifests."""
    blobs = GOLDEN_BLOBS
    index = json.loads((GOLDEN / "golden" / "index.json").read_text())
    out = {}
    for m in index["manifests"]:
        manifest = json.loads((blobs / m["digest"].split(":")[1]).read_text())
        layer = manifest["layers"][0]["digest"].split(":")[1]
        out[m["platform"]["architecture"]] = (blobs / layer).read_bytes()
    return out


def test_golden_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold build (its own, empty cache): apko's digests, every stage in a span."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    out = tmp_path / "out"
    doc = build_golden(tmp_path, out)
    image = doc["image"]
    for arch in ("amd64", "arm64"):
        assert image["manifests"][arch]["diff_ids"] == [GOLDEN_DIFF_IDS[arch]]
        assert image["manifests"][arch]["config_digest"] == GOLDEN_CONFIGS[arch]
    assert image["impl"]["compress"] == "reference"
    # Every stage ran in a span, per arch where it is per arch.
    names = {(s["name"], s["arch"]) for s in doc["spans"]}
    for stage in ("index", "resolve", "fetch", "expand", "install", "mutate", "layer",
                  "compress"):
        assert (stage, "x86_64") in names and (stage, "aarch64") in names
    assert ("config", "") in names and ("oci", "") in names
    # The layout on disk: index.json names the image index blob whose digest was reported
    # as TAG, and each arch's manifest as TAG-<arch>.
    blobs = out / "blobs" / "sha256"
    index_bytes = read_image_index(out)
    assert image["index_digest"] == "sha256:" + __import__("hashlib").sha256(
        index_bytes).hexdigest()
    top = json.loads((out / "index.json").read_text())
    assert [(d["digest"], d["annotations"]["org.opencontainers.image.ref.name"])
            for d in top["manifests"]] == [
        (image["index_digest"], "golden:latest"),
        *[(image["manifests"][a]["digest"], f"golden:latest-{a}") for a in ("amd64", "arm64")]]
    gold = golden_layers()
    for arch, info in image["manifests"].items():
        ours = layer_files((blobs / info["layers"][0]["digest"].split(":")[1]).read_bytes())
        theirs = layer_files(gold[arch])
        assert sorted(ours) == sorted(theirs)
        for name in COMPARED_FILES:
            assert ours[name] == theirs[name], f"{arch}: {name} differs"
        cfg = json.loads((blobs / info["config_digest"].split(":")[1]).read_text())
        assert cfg["rootfs"]["diff_ids"] == [GOLDEN_DIFF_IDS[arch]]


def test_reproducible_and_epoch_sensitive(tmp_path: Path, golden_cache: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold build and a hot one (the shared warm cache) give the same bytes."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    a = build_golden(tmp_path, tmp_path / "a")["image"]
    b = build_golden(tmp_path, tmp_path / "b", cache=golden_cache)["image"]
    assert a == b
    assert (tmp_path / "a" / "index.json").read_bytes() == \
        (tmp_path / "b" / "index.json").read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    c = build_golden(tmp_path, tmp_path / "c", cache=golden_cache)["image"]
    assert c["index_digest"] != a["index_digest"]
    for arch in ("amd64", "arm64"):
        assert c["manifests"][arch]["config_digest"] != a["manifests"][arch]["config_digest"]
        # scripts.tar is empty here and apko-made files have mtime 0: the layer itself is
        # unchanged, only the image time moves.
        assert c["manifests"][arch]["diff_ids"] == a["manifests"][arch]["diff_ids"]
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    d = build_golden(tmp_path, tmp_path / "d", "--build-date", "2023-11-14T22:13:20Z",
                     cache=golden_cache)["image"]
    assert d["index_digest"] == c["index_digest"]


def test_docker_tarball_and_compress_override(tmp_path: Path, golden_cache: Path) -> None:
    out = tmp_path / "img.tar"
    doc = build_golden(tmp_path, out, "--arch", "x86_64", "--impl", "reference,compress=zlib:9",
                       cache=golden_cache)
    image = doc["image"]
    assert list(image["manifests"]) == ["amd64"]
    assert image["impl"]["compress"] == "zlib:9"
    assert image["manifests"]["amd64"]["diff_ids"] == [GOLDEN_DIFF_IDS["amd64"]]
    assert image["manifests"]["amd64"]["config_digest"] == GOLDEN_CONFIGS["amd64"]
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


def test_fast_profile_same_bytes(tmp_path: Path, golden_cache: Path) -> None:
    """Invariant 1: the fast profile gives the same diffIDs and config digests; with the
    reference compressor also the same blobs, manifests and index."""
    ref = build_golden(tmp_path, tmp_path / "ref", cache=golden_cache)["image"]
    fast = build_golden(tmp_path, tmp_path / "fast", "--impl", "fast", cache=golden_cache)["image"]
    for arch, m in ref["manifests"].items():
        assert fast["manifests"][arch]["diff_ids"] == m["diff_ids"]
        assert fast["manifests"][arch]["config_digest"] == m["config_digest"]
        # isal, not zlib:
        assert fast["manifests"][arch]["layers"][0]["digest"] != m["layers"][0]["digest"]
    same = build_golden(tmp_path, tmp_path / "same", "--impl", "fast,compress=reference",
                        cache=golden_cache)
    assert same["image"]["index_digest"] == ref["index_digest"]


def test_sboms_match_golden_up_to_layer_compression(tmp_path: Path, golden_cache: Path) -> None:
    """Our layer gzip differs from apko's (different compressor), so every digest above the
    diffID differs; with those digests mapped to the golden ones the SBOMs are identical."""
    sboms = tmp_path / "sboms"
    image = build_golden(tmp_path, tmp_path / "out", "--sbom-path", str(sboms),
                         cache=golden_cache)["image"]
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
