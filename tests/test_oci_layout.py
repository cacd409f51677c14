"""OCI layout directory and docker tarball output."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.errors import FormatError
from builder.oci.layout import (
    BlobSource,
    docker_repo_tag,
    layout_index,
    read_image_index,
    write_docker_tarball,
    write_oci_layout,
)
from tests.helpers import GOLDEN, GOLDEN_IMAGES, golden_oci_inputs, require_tool


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_layout_equals_golden(tmp_path: Path) -> None:
    images, index, layers = golden_oci_inputs()
    out = write_oci_layout(tmp_path / "img", index, images, layers, "golden:latest")
    golden = _tree(GOLDEN / "golden")
    golden = {k: v for k, v in golden.items() if not k.startswith("sboms/")}
    # apko's index.json is the image index; ours stores those bytes as a blob and names it.
    apko_index = golden.pop("index.json")
    golden[f"blobs/sha256/{index.digest[7:]}"] = apko_index
    golden["index.json"] = layout_index(index, images, "golden:latest")
    assert _tree(out) == golden
    assert read_image_index(out) == apko_index
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img"]  # no temp leftovers


def test_layout_replaces_existing_dir_and_failure_leaves_nothing(tmp_path: Path) -> None:
    images, index, layers = golden_oci_inputs()
    out = tmp_path / "img"
    out.mkdir()
    (out / "stale").write_text("x")
    write_oci_layout(out, index, images, layers, "t")
    assert not (out / "stale").exists() and (out / "index.json").exists()
    with pytest.raises(FormatError, match="no blob was given"):
        write_oci_layout(tmp_path / "broken", index, images, layers[:1], "t")
    bad = BlobSource(layers[0].digest, layers[0].size + 1, path=layers[0].path)
    with pytest.raises(FormatError, match="expected"):
        write_oci_layout(tmp_path / "broken", index, images, [bad, layers[1]], "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img"]


def test_docker_repo_tag() -> None:
    assert docker_repo_tag("golden:latest", "amd64") == "golden:latest-amd64"
    assert docker_repo_tag("localhost:5000/x", "arm/v7") == "localhost:5000/x:latest-arm_v7"


def test_docker_tarball_structure(tmp_path: Path) -> None:
    images, index, layers = golden_oci_inputs()
    out = write_docker_tarball(tmp_path / "img.tar", "golden:latest", index, images, layers)
    raw = out.read_bytes()
    assert len(raw) % 512 == 0 and raw.endswith(bytes(1024))
    with tarfile.open(out) as tf:
        members = tf.getmembers()
        names = [m.name for m in members]
        assert all(m.mode == 0o644 and m.mtime == 0 and m.isreg() for m in members)
        manifest = json.loads(tf.extractfile("manifest.json").read())
        assert tf.extractfile("index.json").read() == index.data
        for img in images:
            assert tf.extractfile(img.manifest.digest).read() == img.manifest.data
            assert tf.extractfile(img.config.digest).read() == img.config.data
    amd, arm = GOLDEN_IMAGES["x86_64"][0], GOLDEN_IMAGES["aarch64"][0]
    assert manifest == [
        {"Config": images[1].config.digest, "RepoTags": ["golden:latest-amd64"],
         "Layers": [f"{amd}.tar.gz"]},
        {"Config": images[0].config.digest, "RepoTags": ["golden:latest-arm64"],
         "Layers": [f"{arm}.tar.gz"]},
    ]
    assert names.index("manifest.json") < names.index("index.json") == len(names) - 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tar"]


@pytest.mark.tools
def test_skopeo_reads_docker_tarball(tmp_path: Path) -> None:
    require_tool("skopeo")
    images, index, layers = golden_oci_inputs()
    tar = write_docker_tarball(tmp_path / "img.tar", "golden:latest", index, images, layers)
    info = json.loads(subprocess.run(
        ["skopeo", "inspect", f"docker-archive:{tar}:golden:latest-arm64"],
        check=True, capture_output=True,
    ).stdout)
    assert info["Architecture"] == "arm64"
    assert info["Labels"]["org.opencontainers.image.title"] == "Title"
