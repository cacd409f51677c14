"""Config, manifest and index bytes against apko's golden image."""

from __future__ import annotations

import json

import pytest

from builder.archs import apk_arch, oci_arch, platform_of
from builder.errors import ConfigError
from builder.oci.image import Descriptor, ImageSpec, build_config, build_image, build_index
from tests.helpers import (
    GOLDEN,
    GOLDEN_ANNOTATIONS,
    GOLDEN_BLOBS,
    GOLDEN_IMAGES,
    golden_spec,
)


@pytest.mark.parametrize("arch", sorted(GOLDEN_IMAGES))
def test_golden_config_and_manifest(arch: str) -> None:
    _, config_hex, manifest_hex = GOLDEN_IMAGES[arch]
    img = build_image(golden_spec(arch))
    assert img.config.data == (GOLDEN_BLOBS / config_hex).read_bytes()
    assert img.config.digest == "sha256:" + config_hex
    assert img.manifest.data == (GOLDEN_BLOBS / manifest_hex).read_bytes()
    assert img.manifest.digest == "sha256:" + manifest_hex


def test_golden_index() -> None:
    images = [build_image(golden_spec(a)) for a in ("aarch64", "x86_64")]  # order not given
    index = build_index(images, dict(GOLDEN_ANNOTATIONS))
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
