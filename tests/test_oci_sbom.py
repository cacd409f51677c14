"""SPDX documents against apko's golden SBOMs."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time

import pytest

from builder.errors import FormatError
from builder.oci.sbom import (
    OSRelease,
    SbomPackage,
    image_sbom,
    index_sbom,
    parse_os_release,
    spdx_id,
)
from tests.helpers import GOLDEN, GOLDEN_BLOBS, GOLDEN_IMAGES

SBOMS = GOLDEN / "golden" / "sboms"
INDEX_DIGEST = "sha256:b5f05e6fc882c97d61c1daee566954ae6fc09924f8e152293e2b97a06092069f"


def _layer_files(layer_hex: str) -> dict[str, bytes]:
    raw = gzip.decompress((GOLDEN_BLOBS / layer_hex).read_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isreg()}


def _golden_inputs(arch: str) -> dict:
    layer_hex, _, manifest_hex = GOLDEN_IMAGES[arch]
    files = _layer_files(layer_hex)
    pkgs = [
        SbomPackage(name, "1.0.0-r0", arch, "MIT",
                    files[f"var/lib/db/sbom/{name}-1.0.0-r0.spdx.json"])
        for name in ("pretend-baselayout", "replayout")  # installed-db order
    ]
    return dict(
        repo="golden:latest",
        arch=arch,
        manifest_digest="sha256:" + manifest_hex,
        layer_digests=["sha256:" + layer_hex],
        created=0,
        os_release=parse_os_release(files["etc/os-release"].decode()),
        packages=pkgs,
    )


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_image_sbom_matches_golden(arch: str) -> None:
    ours = image_sbom(**_golden_inputs(arch))
    golden = (SBOMS / f"sbom-{arch}.spdx.json").read_bytes()
    assert json.loads(ours) == json.loads(golden)
    assert ours == golden


def test_index_sbom_matches_golden() -> None:
    images = [("amd64", "sha256:" + GOLDEN_IMAGES["x86_64"][2]),
              ("arm64", "sha256:" + GOLDEN_IMAGES["aarch64"][2])]
    ours = index_sbom(repo="golden:latest", index_digest=INDEX_DIGEST, images=images, created=0)
    assert ours == (SBOMS / "sbom-index.spdx.json").read_bytes()


def test_os_release_parsing() -> None:
    assert parse_os_release(None) == OSRelease("unknown", "unknown", "unknown")
    rel = parse_os_release('# c\nID=wolfi\nNAME="Wolfi"\nVERSION_ID=20230201\nBAD\n')
    assert rel == OSRelease("wolfi", "Wolfi", "20230201")
    assert parse_os_release("NAME='Alpine Linux'\n").name == "Alpine Linux"


def test_generated_entries_without_package_sboms_and_scaling() -> None:
    n = 5000
    pkgs = [SbomPackage(f"p{i}", "1.0-r0", "armv7", "MIT OR Apache-2.0") for i in range(n)]
    pkgs.append(pkgs[0])  # duplicates collapse
    t = time.perf_counter()
    raw = image_sbom(repo="reg.example:5000/team/img:1", arch="armv7",
                     manifest_digest="sha256:" + "a" * 64, layer_digests=["sha256:" + "b" * 64],
                     created=1700000000, os_release=OSRelease("wolfi", "Wolfi", "2024"),
                     packages=pkgs)
    elapsed = time.perf_counter() - t
    doc = json.loads(raw)
    assert len(doc["packages"]) == 3 + n
    assert len(doc["relationships"]) == 1 + n
    p = doc["packages"][3]
    assert p["SPDXID"] == "SPDXRef-Package-apk-p0-1.0-r0"
    assert p["licenseDeclared"] == "MIT OR Apache-2.0"
    assert p["externalRefs"][0]["referenceLocator"] == "pkg:apk/wolfi/p0@1.0-r0?arch=armv7"
    img_purl = doc["packages"][0]["externalRefs"][0]["referenceLocator"]
    assert img_purl.startswith("pkg:oci/img@sha256:" + "a" * 64 + "?arch=arm&mediaType=")
    assert img_purl.endswith("&os=linux&repository_url=reg.example%3A5000%2Fteam%2Fimg&variant=v7")
    assert doc["creationInfo"]["created"] == "2023-11-14T22:13:20Z"
    assert doc["packages"][2]["SPDXID"] == "SPDXRef-OperatingSystem-wolfi"
    assert elapsed < 5  # linear work: 5,000 packages in well under a second normally
    assert spdx_id("SPDXRef-Package-apk-a_b+c") == "SPDXRef-Package-apk-a-b-c"
    with pytest.raises(FormatError, match="not valid JSON"):
        image_sbom(repo="x", arch="x86_64", manifest_digest="sha256:" + "a" * 64,
                   layer_digests=["sha256:" + "b" * 64], created=0, os_release=OSRelease(),
                   packages=[SbomPackage("bad", "1", "x86_64", spdx_json=b"{", source="bad.json")])
