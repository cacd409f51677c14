"""The `oci` stage output: the built images and index on disk — an OCI image layout
directory, or a docker-loadable tarball when the output path ends in `.tar` (both written to
a temporary sibling and renamed into place by builder.oci.layout).

Interface: `oci(images, index, layers, out, tag) -> int` (bytes of blobs written), where
`layers` maps layer digest -> path of the compressed layer blob.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from builder.oci.image import Blob, BuiltImage
from builder.oci.layout import BlobSource, write_docker_tarball, write_oci_layout


def oci_reference(images: list[BuiltImage], index: Blob, layers: dict[str, Path],
                  out: Path, tag: str) -> int:
    sources = [BlobSource.from_file(path, digest) for digest, path in sorted(layers.items())]
    if out.suffix == ".tar":
        write_docker_tarball(out, tag, index, images, sources)
        return out.stat().st_size
    write_oci_layout(out, index, images, sources)
    return sum(p.stat().st_size for p in (out / "blobs" / "sha256").iterdir())


IMPLEMENTATIONS: dict[str, Callable[..., int]] = {"reference": oci_reference}
