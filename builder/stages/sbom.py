"""The `sbom` stage: the per-arch SPDX 2.3 document (written outside the image, as apko does),
from the image's own `/etc/os-release` and each installed package's embedded SBOM
(`/var/lib/db/sbom/<name>-<version>.spdx.json`, when the package ships one).

Interface: `sbom(arch_result, fs, outdir, repo) -> Path` (the written
`sbom-<apkarch>.spdx.json`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder.fsroot import FsModel
from builder.oci.sbom import SbomPackage, image_sbom, parse_os_release


def sbom_reference(result: Any, fs: FsModel, outdir: Path, repo: str) -> Path:
    os_release = parse_os_release(
        fs.read("etc/os-release").decode("utf-8", "replace")
        if fs.exists("etc/os-release") else None)
    packages = []
    for p in result.packages:
        path = f"var/lib/db/sbom/{p.name}-{p.version}.spdx.json"
        embedded = fs.read(path) if fs.exists(path) else None
        packages.append(SbomPackage(p.name, p.version, p.arch, p.license, embedded, path))
    data = image_sbom(repo=repo, arch=result.apk_arch, manifest_digest=result.image.manifest.digest,
                      layer_digests=[result.layer_digest], created=result.created,
                      os_release=os_release, packages=packages)
    out = outdir / f"sbom-{result.apk_arch}.spdx.json"
    out.write_bytes(data)
    return out


IMPLEMENTATIONS: dict[str, Callable[..., Path]] = {"reference": sbom_reference}
