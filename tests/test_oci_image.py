"""Config, manifest and index bytes against apko's golden image."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest
import yaml

from builder.archs import apk_arch, oci_arch, platform_of
from builder.errors import ConfigError
from builder.oci.image import Descriptor, ImageSpec, build_config, build_image, build_index
from tests.conftest import GOLDEN

BLOBS = GOLDEN / "golden" / "blobs" / "sha256"
ANNOTATIONS = {
    "org.opencontainers.image.title": "Title",
    "org.opencontainers.image.vendor": "Vendor",
}
# apk arch -> (golden layer blob, golden config, golden manifest)
GOLDEN_IMAGES = {
    "x86_64": (
        "c7557730da0e2d7fb242d8d1ac6dcf7e3a2439732aa5981270b4f3a02454b738",
        "6c815259150f37d000417f9a93f41bddf74dff905c745986069d4b03e954ac1d",
        "69f0237c7f8cf0b8a329d1bf1d6870c870c4ec323e39d3a6da59596632d0f2f4",
    ),
    "aarch64": (
        "7e0f9d62f6cab4785e18a55f17d03f20ffb776881f1f46258efd9458f7cdaf08",
        "fbb854f9d5a601a36c4dc8cc82e5b21e91b11cdd4aab5035340e4f517c5a8eb1",
        "124c885f834cfaf1329987457a9651a68c4fb9733d4462ae6288b98011277858",
    ),
}


def golden_spec(arch: str) -> ImageSpec:
    """The inputs apko had: apko.yaml + the test's annotations + diffID/digest of the layer."""
    cfg = yaml.safe_load((GOLDEN / "apko.yaml").read_text())
    layer_hex = GOLDEN_IMAGES[arch][0]
    blob = (BLOBS / layer_hex).read_bytes()
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    return ImageSpec(
        arch=arch,
        diff_ids=[diff_id],
        layers=[Descriptor("sha256:" + layer_hex, len(blob))],
        created=0,
        entrypoint=cfg["entrypoint"]["command"].split(),
        annotations=dict(ANNOTATIONS),
    )


@pytest.mark.parametrize("arch", sorted(GOLDEN_IMAGES))
def test_golden_config_and_manifest(arch: str) -> None:
    _, config_hex, manifest_hex = GOLDEN_IMAGES[arch]
    img = build_image(golden_spec(arch))
    assert img.config.data == (BLOBS / config_hex).read_bytes()
    assert img.config.digest == "sha256:" + config_hex
    assert img.manifest.data == (BLOBS / manifest_hex).read_bytes()
    assert img.manifest.digest == "sha256:" + manifest_hex


def test_golden_index() -> None:
    images = [build_image(golden_spec(a)) for a in ("aarch64", "x86_64")]  # order not given
    index = build_index(images, dict(ANNOTATIONS))
    golden = (GOLDEN / "golden" / "index.json").read_bytes()
    assert index.data == golden
    assert index.digest == (
        "sha256:b5f05e6fc882c97d61c1daee566954ae6fc09924f8e152293e2b97a06092069f"
    )


def test_arch_mapping() -> None:
    for apk, oci in [("x86_64", "amd64"), ("aarch64", "arm64"), ("armv7", "arm/v7"),
                     ("armhf", "arm/v6"), ("x86", "386"), ("ppc64le", "ppc64le"),
                     ("s390x", "s390x"), ("riscv64", "riscv64"), ("loongarch64", "loong64")]:
        assert oci_arch(apk) == oci and oci_arch(oci) == oci
        assert apk_arch(oci) == apk and apk_arch(apk) == apk
    assert platform_of("armv7") == ("arm", "v7")
    assert platform_of("amd64") == ("amd64", "")
    with pytest.raises(ConfigError, match="sparc"):
        oci_arch("sparc")


def test_variant_env_volumes_multilayer_and_index_order() -> None:
    spec = ImageSpec(
        arch="armv7",
        diff_ids=["sha256:" + "1" * 64, "sha256:" + "2" * 64],
        layers=[Descriptor("sha256:" + "a" * 64, 10), Descriptor("sha256:" + "b" * 64, 20)],
        created=1700000000,
        cmd=["help"],
        env={"PATH": "/custom", "A": "1<2"},
        workdir="/w",
        user="65532",
        stop_signal="SIGTERM",
        volumes=["/data"],
        vcs_url="https://example.com/repo@abc123",
    )
    raw = build_config(spec).data
    assert b'"variant":"v7"' in raw and raw.index(b'"config"') < raw.index(b'"variant"')
    assert b'"A=1\\u003c2","PATH=/custom","SSL_CERT_FILE=' in raw
    cfg = json.loads(raw)
    assert [h.get("comment") for h in cfg["history"]] == [None, None]  # multi-layer: omitted
    assert cfg["created"] == "2023-11-14T22:13:20Z"
    c = cfg["config"]
    assert list(c) == ["Cmd", "Env", "Labels", "User", "Volumes", "WorkingDir", "StopSignal"]
    assert c["Volumes"] == {"/data": {}}
    assert c["Labels"]["org.opencontainers.image.revision"] == "abc123"
    assert c["Labels"]["org.opencontainers.image.source"] == "https://example.com/repo"
    single = build_config(
        ImageSpec(arch="x86_64", diff_ids=[spec.diff_ids[0]], layers=[spec.layers[0]])
    )
    assert json.loads(single.data)["history"][0]["comment"] == "This is an apko single-layer image"

    imgs = [build_image(ImageSpec(arch=a, diff_ids=[spec.diff_ids[0]], layers=[spec.layers[0]],
                                  created=c)) for a, c in [("arm64", 5), ("armv7", 9),
                                                           ("armhf", 1), ("x86", 2)]]
    idx = json.loads(build_index(imgs, {}).data)
    plats = [(m["platform"]["architecture"], m["platform"].get("variant"))
             for m in idx["manifests"]]
    assert plats == [("386", None), ("arm", "v6"), ("arm", "v7"), ("arm64", None)]
    assert idx["annotations"] == {"org.opencontainers.image.created": "1970-01-01T00:00:09Z"}
    with pytest.raises(ConfigError, match="diff_ids"):
        build_config(ImageSpec(arch="x86_64", diff_ids=[], layers=[spec.layers[0]]))
