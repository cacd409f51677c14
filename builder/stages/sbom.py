"""The `sbom` stage: an SPDX 2.3 JSON document per arch (written outside the image).

Interface: `sbom(arch_result, cfg, fs, outdir) -> Path | None`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder.errors import ApkImageError


def sbom_reference(result: Any, cfg: Any, fs: Any, outdir: Path) -> Path | None:
    try:
        from builder.oci import sbom
    except ImportError:
        raise ApkImageError("--sbom-path: the SBOM generator (builder.oci.sbom) is not "
                            "available in this build") from None
    return sbom.write_arch_sbom(result, cfg, fs, outdir)


IMPLEMENTATIONS: dict[str, Callable[..., Path | None]] = {"reference": sbom_reference}
