"""The `sbom` stage: the per-arch SPDX 2.3 document (written outside the image, as apko does),
from the image's own `/etc/os-release` and each installed package's embedded SBOM
(`/var/lib/db/sbom/<name>-<version>.spdx.json`, when the package ships one).

`sbom_reference(arch, fs, outdir, repo)` writes `sbom-<apkarch>.spdx.json` into `outdir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from builder.stages.spec import Impl, StageSpec

if TYPE_CHECKING:
    from builder.artefacts import ArchArtefacts
    from builder.fs.model import FsModel


def sbom_reference(arch: ArchArtefacts, fs: FsModel, outdir: Path, repo: str) -> Path:
    from builder.oci.sbom import SbomPackage, image_sbom, parse_os_release

    os_release = parse_os_release(
        fs.read("etc/os-release").decode("utf-8", "replace")
        if fs.exists("etc/os-release") else None)
    packages = []
    for p in arch.packages:
        path = f"var/lib/db/sbom/{p.name}-{p.version}.spdx.json"
        embedded = fs.read(path) if fs.exists(path) else None
        packages.append(SbomPackage(p.name, p.version, p.arch, p.license, embedded, path))
    data = image_sbom(repo=repo, arch=arch.apk_arch, manifest_digest=arch.image.manifest.digest,
                      layer_digests=[la.digest for la in arch.layers], created=arch.created,
                      os_release=os_release, packages=packages,
                      layer_media_types=[la.media_type for la in arch.layers])
    out = outdir / f"sbom-{arch.apk_arch}.spdx.json"
    out.write_bytes(data)
    return out


STAGE = StageSpec("sbom", (
    Impl("sbom", "reference", sbom_reference, "SPDX 2.3, with the packages' embedded SBOMs"),
))
