"""The built images checked by real tools: umoci unpacks them to the expected tree, a local
docker-registry accepts the push, skopeo agrees on digests, re-publishing uploads nothing, an
auth-refusing registry is one clear error. Also an image from real signed Alpine/Wolfi
packages served from a repository generated here (our index, our key)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.apk.index import index_record_from_apk, write_index
from builder.apk.package import read_apk
from builder.apk.signing import generate_key
from builder.cli import main
from tests.helpers import (
    FIXTURES,
    GOLDEN,
    golden_workdir,
    make_htpasswd,
    require_tool,
    run_registry,
)

pytestmark = pytest.mark.tools


def golden_build(tmp_path: Path, out: Path, cache: Path, *extra: str) -> dict:
    """`apkimage build` of the golden fixture (without apko's annotations): the image."""
    spans = tmp_path / "spans.json"
    rc = main(["build", str(GOLDEN / "apko.yaml"), "golden:latest", str(out), "--workdir",
               str(golden_workdir(tmp_path)), "--cache-dir", str(cache), "--spans", str(spans),
               *extra])
    assert rc == 0
    return json.loads(spans.read_text())["image"]


def umoci_unpack(layout: Path, dest: Path, ref: str) -> Path:
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:{ref}",
                    str(dest)], check=True, capture_output=True)
    return dest / "rootfs"


def test_skopeo_and_umoci_take_the_layout_by_its_tag(tmp_path: Path, golden_cache: Path) -> None:
    """index.json names the image TAG and each arch TAG-<arch>: no hand edits needed."""
    require_tool("skopeo", "umoci")
    out = tmp_path / "layout"
    image = golden_build(tmp_path, out, golden_cache)
    copy = tmp_path / "copy"
    # (Debian 12's skopeo re-encodes an index carrying artifactType, apko's bytes: the
    # index digest changes on the way, the per-arch manifests keep theirs.)
    subprocess.run(["skopeo", "copy", "--all", "oci:" + str(out) + ":golden:latest",
                    f"oci:{copy}:again"], check=True, capture_output=True)
    top = json.loads((copy / "index.json").read_text())["manifests"][0]
    copied = json.loads((copy / "blobs" / "sha256" / top["digest"][7:]).read_text())
    assert sorted(m["digest"] for m in copied["manifests"]) == sorted(
        m["digest"] for m in image["manifests"].values())
    root = umoci_unpack(out, tmp_path / "bundle", "golden:latest-arm64")
    assert (root / "etc" / "apko.json").is_file()
    cfg = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert cfg["process"]["args"]


def test_umoci_unpacks_golden(tmp_path: Path, golden_cache: Path) -> None:
    require_tool("umoci")
    out = tmp_path / "layout"
    golden_build(tmp_path, out, golden_cache, "--arch", "x86_64")
    root = umoci_unpack(out, tmp_path / "bundle", "golden:latest")  # index.json names TAG
    assert (root / "etc" / "apk" / "world").read_text() == \
        "pretend-baselayout=1.0.0-r0\nreplayout=1.0.0-r0\n"
    assert os.readlink(root / "lib" / "apk") == "../usr/lib/apk"
    # replayout replaces pretend-baselayout (whose os-release says ID=pretend): replayout's
    # os-release is the one in the image, as in apko's golden layer.
    assert (root / "etc" / "os-release").read_text() == (
        'ID=replaces\nNAME="Replaces"\nPRETTY_NAME="Replaces"\nVERSION_ID="1.0.0"\n'
        'HOME_URL="https://example.com/"\n')
    assert not (root / "etc" / "os-release").is_symlink()
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (root / "etc" / "apko.json").stat().st_mode & 0o777 == 0o444
    assert (root / "var/lib/db/sbom/replayout-1.0.0-r0.spdx.json").is_file()
    cfg = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert cfg["process"]["args"] == ["/bin/sh", "-l"]


def test_publish_skopeo_and_republish(tmp_path: Path, golden_cache: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    require_tool("docker-registry", "skopeo")
    with run_registry(tmp_path) as base:
        host = base.split("://")[1]
        ref = f"{host}/golden:v1"
        argv = ["publish", str(GOLDEN / "apko.yaml"), ref, "--workdir",
                str(golden_workdir(tmp_path)), "--cache-dir", str(golden_cache), "--json"]
        assert main(argv) == 0
        first = json.loads(capsys.readouterr().out)
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                              f"docker://{ref}"], check=True, capture_output=True).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == first["index_digest"]
        for arch, info in first["manifests"].items():
            got = subprocess.run(
                ["skopeo", "inspect", "--tls-verify=false", "--override-arch", arch,
                 f"docker://{ref}"], check=True, capture_output=True).stdout
            meta = json.loads(got)
            assert meta["Digest"] == first["index_digest"]  # skopeo reports the top manifest
            assert meta["Layers"] == [info["layers"][0]["digest"]]
            assert meta["Architecture"] == arch
            per_arch = subprocess.run(
                ["skopeo", "inspect", "--raw", "--tls-verify=false",
                 f"docker://{host}/golden@{info['digest']}"], check=True,
                capture_output=True).stdout
            assert "sha256:" + hashlib.sha256(per_arch).hexdigest() == info["digest"]
        pulled = tmp_path / "pulled"
        subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--override-arch", "amd64",
                        f"docker://{ref}", f"oci:{pulled}:x"], check=True, capture_output=True)
        assert len(first["pushed"]["uploaded"]) == 4  # 2 layers + 2 configs
        # Re-publishing: every blob is already there, nothing is uploaded again.
        assert main(argv) == 0
        second = json.loads(capsys.readouterr().out)
        assert second["index_digest"] == first["index_digest"]
        assert second["pushed"]["uploaded"] == []
        assert sorted(second["pushed"]["skipped"]) == sorted(first["pushed"]["uploaded"])


def test_registry_refusing_auth(tmp_path: Path, golden_cache: Path,
                                capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("docker-registry")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    htpasswd = make_htpasswd(tmp_path, "alice", "secret")
    with run_registry(tmp_path, htpasswd) as base:
        host = base.split("://")[1]
        rc = main(["publish", str(GOLDEN / "apko.yaml"), f"{host}/golden:v1", "--workdir",
                   str(golden_workdir(tmp_path)), "--cache-dir", str(golden_cache)])
        err = capsys.readouterr().err
        assert rc == 1
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("apkimage: error: ")
        assert host in lines[0] or "golden" in lines[0]


REAL = [  # x86_64 packages from the fixtures: (path, name)
    (FIXTURES / "apk/alpine/curl-7.83.1-r1.apk", "curl"),
    (FIXTURES / "apk/alpine/strace-5.17-r0.apk", "strace"),
    (FIXTURES / "apk/wolfi/ruby3.2-base64-0.2.0-r2.apk", "ruby3.2-base64"),
    (FIXTURES / "apk/melange-local/tzdata-2023c-r0.multimember.x86_64.apk", "tzdata"),
]


def test_real_signed_packages(tmp_path: Path) -> None:
    """A repository of real packages (signed by Alpine/Wolfi/melange keys we do not trust
    here) under an index we sign: apk trusts the index, so the build succeeds."""
    require_tool("umoci")
    repo = tmp_path / "repo"
    (repo / "x86_64").mkdir(parents=True)
    private, public = generate_key(2048)
    (tmp_path / "local.rsa.pub").write_bytes(public)
    records = []
    for path, _ in REAL:
        data = path.read_bytes()
        apk = read_apk(data, str(path))
        rec = index_record_from_apk(apk, len(data))
        rec.depends = []  # their libc/so: dependencies are not in this small repository
        records.append(rec)
        shutil.copy(path, repo / "x86_64" / rec.filename)
    (repo / "x86_64" / "APKINDEX.tar.gz").write_bytes(
        write_index(records, private, "local.rsa.pub"))
    cfg = tmp_path / "apko.yaml"
    cfg.write_text("contents:\n  keyring: [local.rsa.pub]\n  repositories: [./repo]\n"
                   "  packages: [curl, strace, ruby3.2-base64, tzdata]\n"
                   "entrypoint: {command: /usr/bin/curl}\narchs: [x86_64]\n")
    out = tmp_path / "layout"
    spans = tmp_path / "spans.json"
    # The config's paths are relative to its folder: --workdir (apko's rule is the cwd).
    assert main(["build", str(cfg), "real:latest", str(out), "--workdir", str(tmp_path),
                 "--cache-dir", str(tmp_path / "cache"), "--spans", str(spans)]) == 0
    root = umoci_unpack(out, tmp_path / "bundle", "real:latest-amd64")  # the per-arch name
    assert (root / "usr/bin/curl").stat().st_size > 0
    assert (root / "usr/bin/strace").stat().st_size > 0
    assert (root / "usr/share/zoneinfo").is_dir()
    installed = (root / "usr/lib/apk/db/installed").read_text()
    for _, name in REAL:
        assert f"\nP:{name}\n" in "\n" + installed
    world = (root / "etc/apk/world").read_text().split()
    assert sorted(n.split("=")[0] for n in world) == sorted(n for _, n in REAL)
    # Content went through untouched: compare one file with the package's own bytes.
    from builder.expand.reference import expand_one

    (tmp_path / "x").mkdir()
    exp = expand_one(REAL[0][0], tmp_path / "x")
    entry = next(e for e in exp.entries if e.path == "usr/bin/curl")
    assert (root / "usr/bin/curl").read_bytes() == exp.read(entry)
