"""OCI config, manifest and index bytes, field for field as apko (via go-containerregistry)
writes them: Go struct field order, `omitempty`, sorted maps, compact HTML-safe JSON.

Typical use, per build::

    images = [build_image(ImageSpec(arch="x86_64", diff_ids=[...], layers=[Descriptor(...)],
                                    created=0, entrypoint=["/bin/sh", "-l"]))]
    index = build_index(images, annotations={...}, created=0)
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from builder.archs import oci_arch, platform_of
from builder.errors import ConfigError
from builder.gojson import Struct, dumps

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

AUTHOR = "github.com/chainguard-dev/apko"
DEFAULT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/bin:/usr/sbin:/sbin:/bin",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
}
ANN_CREATED = "org.opencontainers.image.created"
ANN_SOURCE = "org.opencontainers.image.source"
ANN_REVISION = "org.opencontainers.image.revision"
ANN_TITLE = "org.opencontainers.image.title"
ANN_VENDOR = "org.opencontainers.image.vendor"

def rfc3339(epoch: int) -> str:
    """Go's time.RFC3339 of a UTC time with whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest says about a blob."""

    digest: str
    size: int
    media_type: str = MEDIA_LAYER_GZIP


@dataclass(frozen=True)
class Blob:
    """Serialised JSON object plus its descriptor fields."""

    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self) -> Descriptor:
        return Descriptor(self.digest, self.size, self.media_type)


@dataclass
class ImageSpec:
    """Everything that goes into one arch's config and manifest."""

    arch: str
    diff_ids: list[str]
    layers: list[Descriptor]
    created: int = 0
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = ""
    stop_signal: str = ""
    volumes: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    vcs_url: str = ""
    os_features: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BuiltImage:
    arch: str  # OCI arch string
    config: Blob
    manifest: Blob
    created: int


def image_annotations(annotations: dict[str, str], created: int, vcs_url: str = "") -> dict:
    """Config annotations + source/revision from `url@sha` + created (RFC3339)."""
    out = dict(annotations)
    if vcs_url:
        url, sep, rev = vcs_url.partition("@")
        if sep:
            out[ANN_SOURCE] = url
            out[ANN_REVISION] = rev
    out[ANN_CREATED] = rfc3339(created)
    return out


def history_comment(annotations: dict[str, str], layer_count: int) -> str:
    title, vendor = annotations.get(ANN_TITLE), annotations.get(ANN_VENDOR)
    if title and vendor:
        return f"{title} by {vendor}"
    return "This is an apko single-layer image" if layer_count == 1 else ""


def _descriptor_json(d: Descriptor) -> Struct:
    return Struct([("mediaType", d.media_type), ("size", d.size), ("digest", d.digest)])


def build_config(spec: ImageSpec) -> Blob:
    """The image config blob (ggcr ConfigFile field order)."""
    if len(spec.diff_ids) != len(spec.layers):
        raise ConfigError(
            f"image {spec.arch}: {len(spec.diff_ids)} diff_ids for {len(spec.layers)} layers"
        )
    arch, variant = platform_of(spec.arch)
    created = rfc3339(spec.created)
    annotations = image_annotations(spec.annotations, spec.created, spec.vcs_url)
    comment = history_comment(spec.annotations, len(spec.layers))
    history = [
        Struct(
            [("author", "apko"), ("created", created), ("created_by", "apko"),
             ("comment", comment)],
            omitempty={"comment"},
        )
        for _ in spec.layers
    ]
    env = dict(DEFAULT_ENV)
    env.update(spec.env)
    env_list = sorted(f"{k}={v}" for k, v in env.items())
    cfg = Struct(
        [
            ("Cmd", list(spec.cmd)),
            ("Entrypoint", list(spec.entrypoint)),
            ("Env", env_list),
            ("Labels", annotations),
            ("User", spec.user),
            ("Volumes", {v: Struct() for v in spec.volumes}),
            ("WorkingDir", spec.workdir),
            ("StopSignal", spec.stop_signal),
        ],
        omitempty={"Cmd", "Entrypoint", "Env", "Labels", "User", "Volumes", "WorkingDir",
                   "StopSignal"},
    )
    doc = Struct(
        [
            ("architecture", arch),
            ("author", AUTHOR),
            ("created", created),
            ("history", history),
            ("os", "linux"),
            ("rootfs", Struct([("type", "layers"), ("diff_ids", list(spec.diff_ids))])),
            ("config", cfg),
            ("variant", variant),
            ("os.features", list(spec.os_features)),
        ],
        omitempty={"history", "variant", "os.features"},
    )
    return Blob(dumps(doc), MEDIA_CONFIG)


def build_manifest(spec: ImageSpec, config: Blob) -> Blob:
    """The image manifest blob referencing `config` and the spec's layers."""
    doc = Struct(
        [
            ("schemaVersion", 2),
            ("mediaType", MEDIA_MANIFEST),
            ("config", _descriptor_json(config.descriptor())),
            ("layers", [_descriptor_json(d) for d in spec.layers]),
            ("annotations", image_annotations(spec.annotations, spec.created, spec.vcs_url)),
        ],
        omitempty={"annotations"},
    )
    return Blob(dumps(doc), MEDIA_MANIFEST)


def build_image(spec: ImageSpec) -> BuiltImage:
    config = build_config(spec)
    return BuiltImage(oci_arch(spec.arch), config, build_manifest(spec, config), spec.created)


def build_index(
    images: list[BuiltImage], annotations: dict[str, str], created: int | None = None,
    vcs_url: str = "",
) -> Blob:
    """The image index: one descriptor per arch in OCI-arch string order; `created` defaults to
    the newest image's."""
    if not images:
        raise ConfigError("index: no images to index")
    if created is None:
        created = max(i.created for i in images)
    manifests = []
    for img in sorted(images, key=lambda i: i.arch):
        arch, variant = platform_of(img.arch)
        plat = Struct([("architecture", arch), ("os", "linux"), ("variant", variant)],
                      omitempty={"variant"})
        manifests.append(
            Struct(
                [
                    ("mediaType", img.manifest.media_type),
                    ("size", img.manifest.size),
                    ("digest", img.manifest.digest),
                    ("platform", plat),
                    ("artifactType", img.config.media_type),
                ]
            )
        )
    doc = Struct(
        [
            ("schemaVersion", 2),
            ("mediaType", MEDIA_INDEX),
            ("manifests", manifests),
            ("annotations", image_annotations(annotations, created, vcs_url)),
        ],
        omitempty={"annotations"},
    )
    return Blob(dumps(doc), MEDIA_INDEX)
