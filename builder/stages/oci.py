"""The `oci` stage output: the built images and index on disk — an OCI image layout
directory, or a docker-loadable tarball when the output path ends in `.tar` (both written to
a temporary sibling and renamed into place by builder.oci.layout).

`oci_reference(images, index, layers, out, tag)` returns the bytes of blobs written;
`layers` maps layer digest -> path of the compressed layer blob.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from builder.stages.spec import Impl, StageSpec

if TYPE_CHECKING:
    from builder.oci.image import Blob, BuiltImage


def oci_reference(images: list[BuiltImage], index: Blob, layers: dict[str, Path],
                  out: Path, tag: str) -> int:
    from builder.oci.layout import BlobSource, write_docker_tarball, write_oci_layout

    sources = [BlobSource.from_file(path, digest) for digest, path in sorted(layers.items())]
    if out.suffix == ".tar":
        write_docker_tarball(out, tag, index, images, sources)
        return out.stat().st_size
    write_oci_layout(out, index, images, sources, tag)
    return sum(p.stat().st_size for p in (out / "blobs" / "sha256").iterdir())


STAGE = StageSpec("oci", (
    Impl("oci", "reference", oci_reference,
         "OCI layout directory, or docker tarball for OUT.tar (renamed into place)"),
))
