"""What a build produces: per arch its layers, image (config + manifest) and SBOM; for the
build the index over them. `BuildResult.summary()` is the "image" object of `--spans` and
`--json`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.apk.model import Package

if TYPE_CHECKING:
    from builder.config import ImageConfig
    from builder.oci.image import Blob, BuiltImage


@dataclass(frozen=True)
class LayerArtefact:
    """One finished layer: its uncompressed digest (diffID) and its blob."""

    diff_id: str
    digest: str  # of the compressed blob
    size: int
    media_type: str
    path: Path  # the blob on disk


@dataclass
class ArchArtefacts:
    arch: str  # OCI name
    apk_arch: str
    packages: list[Package]  # as installed (rebuilt from .PKGINFO), in install order
    created: int
    layers: list[LayerArtefact]
    user: str
    image: BuiltImage
    sbom_path: Path | None = None


@dataclass
class BuildResult:
    config: ImageConfig
    archs: list[ArchArtefacts]
    index: Blob
    impl: dict[str, str]  # stage -> implementation that ran it
    sboms: list[Path] = field(default_factory=list)

    @property
    def images(self) -> list[BuiltImage]:
        return [a.image for a in self.archs]

    @property
    def layers(self) -> dict[str, Path]:
        """Layer blob digest -> its file."""
        return {la.digest: la.path for a in self.archs for la in a.layers}

    def summary(self) -> dict[str, Any]:
        return {
            "index_digest": self.index.digest,
            "manifests": {
                a.arch: {
                    "digest": a.image.manifest.digest,
                    "config_digest": a.image.config.digest,
                    "diff_ids": [la.diff_id for la in a.layers],
                    "layers": [{"digest": la.digest, "size": la.size,
                                "media_type": la.media_type} for la in a.layers],
                } for a in self.archs
            },
            "impl": dict(self.impl),
        }
