"""A `compress=zstd:N` image is a real OCI image: skopeo copies it from our layout into a
docker-registry and back (verifying every blob), the registry serves the tar+zstd layer, and
umoci unpacks it to the same tree as the gzip image of the same build."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import (
    build_golden,
    differences,
    require_tool,
    require_umoci_with_zstd,
    run_registry,
    snapshot,
    tagged_layout,
    unpack,
)

ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


@pytest.mark.tools
def test_zstd_image_through_skopeo_registry_and_umoci(tmp_path: Path, golden_cache: Path) -> None:
    require_tool("skopeo", "docker-registry")
    require_umoci_with_zstd()
    gz = build_golden(tmp_path, tmp_path / "gz", cache=golden_cache)["image"]
    zs = build_golden(tmp_path, tmp_path / "zs", "--impl", "reference,compress=zstd:3",
                      cache=golden_cache)["image"]
    for arch, m in zs["manifests"].items():
        assert m["diff_ids"] == gz["manifests"][arch]["diff_ids"]  # same tar
        (layer,) = m["layers"]
        assert layer["media_type"] == ZSTD
        manifest = json.loads((tmp_path / "zs" / "blobs" / "sha256" / m["digest"][7:])
                              .read_text())
        assert [x["mediaType"] for x in manifest["layers"]] == [ZSTD]

    m = zs["manifests"]["amd64"]
    layout = tagged_layout(tmp_path / "zs", m["digest"], tmp_path / "zs-tagged")
    with run_registry(tmp_path) as base:
        ref = f"{base.split('://')[1]}/golden-zstd:amd64"
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:img",
                        f"docker://{ref}"], check=True, capture_output=True)
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                              f"docker://{ref}"], check=True, capture_output=True).stdout
        served = json.loads(raw)
        assert [x["mediaType"] for x in served["layers"]] == [ZSTD]
        assert [x["digest"] for x in served["layers"]] == [m["layers"][0]["digest"]]
        pulled = tmp_path / "pulled"
        subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}",
                        f"oci:{pulled}:x"], check=True, capture_output=True)
        assert (pulled / "blobs" / "sha256" / m["layers"][0]["digest"][7:]).read_bytes() == \
            (tmp_path / "zs" / "blobs" / "sha256" / m["layers"][0]["digest"][7:]).read_bytes()

    a = snapshot(unpack(tmp_path / "gz", gz["manifests"]["amd64"]["digest"], tmp_path / "u-gz"))
    b = snapshot(unpack(tmp_path / "zs", m["digest"], tmp_path / "u-zs"))
    assert differences(a, b) == [] and len(a) > 10
