"""Writing a built image to disk: an OCI image layout directory or a `docker load` tarball.

Both are written next to the destination first and renamed into place, so a failure leaves
neither a partial output nor temp files. Layer blobs are streamed from their files (never
read whole into memory).

The docker tarball follows apko: per arch, the config as `sha256:<hex>` and the layers as
`<hex>.tar.gz`, then `manifest.json` (`[{"Config","RepoTags","Layers"}]`, RepoTags
`<tag>-<ociarch>` with `/` -> `_`, sorted by tag), then the OCI manifests as `sha256:<hex>`
and the OCI `index.json`; every entry mode 0644, mtime 0, written by the Go-compatible tar
writer, so the same file both `docker load`s and carries the index.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.errors import ApkImageError, FormatError
from builder.gojson import Struct, dumps
from builder.gotar import TarHeader, TarWriter
from builder.oci.image import MEDIA_INDEX, Blob, BuiltImage

OCI_LAYOUT = b'{\n    "imageLayoutVersion": "1.0.0"\n}'


@dataclass(frozen=True)
class BlobSource:
    """A blob to store: either in memory (`data`) or a file on disk (`path`)."""

    digest: str
    size: int
    path: Path | None = None
    data: bytes | None = None

    @classmethod
    def from_blob(cls, blob: Blob) -> BlobSource:
        return cls(blob.digest, blob.size, data=blob.data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], digest: str) -> BlobSource:
        p = Path(path)
        return cls(digest, p.stat().st_size, path=p)

    @property
    def hex(self) -> str:
        algo, _, hexpart = self.digest.partition(":")
        if algo != "sha256" or len(hexpart) != 64:
            raise FormatError(f"blob digest {self.digest!r} is not a sha256 digest")
        return hexpart

    def copy_to(self, dest: Path) -> None:
        """Put the blob at `dest`: a hardlink when the file system allows it (blobs are
        immutable and content-addressed; the build's files are its own), else a copy."""
        if self.data is not None:
            dest.write_bytes(self.data)
        elif self.path is not None:
            try:
                os.link(self.path, dest)
            except OSError:
                shutil.copyfile(self.path, dest)
            got = dest.stat().st_size
            if got != self.size:
                raise FormatError(f"blob {self.path}: expected {self.size} bytes, found {got}")
        else:
            raise FormatError(f"blob {self.digest}: neither data nor path given")

    def open_file(self) -> BinaryIO:
        """The file of a blob given by `path`, opened for reading."""
        if self.path is None:
            raise FormatError(f"blob {self.digest}: no file (its data is in memory)")
        return open(self.path, "rb")


def manifest_layer_digests(manifest: Blob) -> list[str]:
    """The layer digests a manifest references, in order."""
    return [d["digest"] for d in json.loads(manifest.data)["layers"]]


def _collect(images: list[BuiltImage], layers: Iterable[BlobSource]) -> dict[str, BlobSource]:
    by_digest = {b.digest: b for b in layers}
    for img in images:
        for digest in manifest_layer_digests(img.manifest):
            if digest not in by_digest:
                raise FormatError(
                    f"image {img.arch}: layer {digest} is referenced by the manifest but "
                    "no blob was given for it"
                )
    return by_digest


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` directory to `out`, replacing an existing directory."""
    if out.exists() and not out.is_dir():
        raise ApkImageError(f"{out}: exists and is not a directory")
    if out.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / "x")
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


REF_NAME = "org.opencontainers.image.ref.name"


def layout_index(index: Blob, images: list[BuiltImage], tag: str) -> bytes:
    """The layout's index.json: the image index blob named `tag`, and each arch's manifest
    named as apko's docker tarball names it (`tag-<arch>`, docker_repo_tag).

    apko writes the image index itself as index.json. A layout index naming the image is what
    `skopeo copy oci:OUT:TAG` and `umoci unpack --image OUT:TAG` look up, so apkimage stores
    the image index as a blob (apko's bytes, apko's digest) and points at it from here; the
    per-arch names are for tools that take one manifest (umoci calls a multi-arch tag
    ambiguous)."""
    descs = [Struct([("mediaType", index.media_type), ("digest", index.digest),
                     ("size", index.size), ("annotations", {REF_NAME: tag})])]
    for img in sorted(images, key=lambda i: i.arch):
        descs.append(Struct([("mediaType", img.manifest.media_type),
                             ("digest", img.manifest.digest), ("size", img.manifest.size),
                             ("annotations", {REF_NAME: docker_repo_tag(tag, img.arch)})]))
    return dumps(Struct([("schemaVersion", 2), ("mediaType", index.media_type),
                         ("manifests", descs)]))


def read_image_index(layout: Path) -> bytes:
    """The image index of an OCI layout: the blob index.json names (apkimage's layouts), or
    index.json itself when it is the image index (apko's)."""
    top = json.loads((layout / "index.json").read_bytes())
    for desc in top.get("manifests") or []:
        if desc.get("mediaType") == MEDIA_INDEX and REF_NAME in (desc.get("annotations") or {}):
            algo, _, hexd = desc["digest"].partition(":")
            return (layout / "blobs" / algo / hexd).read_bytes()
    return (layout / "index.json").read_bytes()


def read_layout_image(layout: Path) -> tuple[Blob, list[BuiltImage], list[BlobSource]]:
    """What `write_oci_layout` wrote, read back for a push: the image index, each arch's
    image (config and manifest, checked against their digests) and the layer blobs as files
    (sizes checked; their bytes are hashed by whoever receives them)."""
    blobs = layout / "blobs"

    def blob_path(digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
            raise FormatError(f"{layout}: bad digest {digest!r}")
        return blobs / algo / hexd

    def read_blob(digest: str, media_type: str) -> Blob:
        blob = Blob(blob_path(digest).read_bytes(), media_type)
        if blob.digest != digest:
            raise FormatError(f"{layout}: blob {digest} hashes to {blob.digest}")
        return blob

    try:
        data = read_image_index(layout)
        doc = json.loads(data)
        index = Blob(data, doc.get("mediaType") or MEDIA_INDEX)
        images: list[BuiltImage] = []
        layers: dict[str, BlobSource] = {}
        for desc in doc.get("manifests") or []:
            plat = desc.get("platform") or {}
            arch = plat.get("architecture", "")
            if plat.get("variant"):
                arch += "/" + plat["variant"]
            manifest = read_blob(desc["digest"], desc["mediaType"])
            mdoc = json.loads(manifest.data)
            config = read_blob(mdoc["config"]["digest"], mdoc["config"]["mediaType"])
            for la in mdoc["layers"]:
                src = BlobSource.from_file(blob_path(la["digest"]), la["digest"])
                if src.size != la["size"]:
                    raise FormatError(f"{layout}: layer {la['digest']} is {src.size} bytes, "
                                      f"its manifest says {la['size']}")
                layers.setdefault(src.digest, src)
            images.append(BuiltImage(arch, config, manifest, created=0))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{layout}: not a readable OCI layout: {exc}") from None
    if not images:
        raise FormatError(f"{layout}: the image index names no image")
    return index, images, list(layers.values())


def write_oci_layout(
    out: str | os.PathLike[str],
    index: Blob,
    images: list[BuiltImage],
    layers: Iterable[BlobSource],
    tag: str,
) -> Path:
    """Write an OCI image layout at `out`: oci-layout, blobs/sha256/* (the layers, configs,
    manifests and the image index), index.json naming the image index `tag`."""
    out = Path(out).absolute()
    by_digest = _collect(images, layers)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        (tmp / "oci-layout").write_bytes(OCI_LAYOUT)
        written: set[str] = set()

        def put(src: BlobSource) -> None:
            if src.digest not in written:
                src.copy_to(blobs / src.hex)
                written.add(src.digest)

        for img in sorted(images, key=lambda i: i.arch):
            for digest in manifest_layer_digests(img.manifest):
                put(by_digest[digest])
            put(BlobSource.from_blob(img.config))
            put(BlobSource.from_blob(img.manifest))
        put(BlobSource.from_blob(index))
        (tmp / "index.json").write_bytes(layout_index(index, images, tag))
        os.chmod(tmp, 0o755)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def docker_repo_tag(tag: str, arch: str) -> str:
    """`golden:latest` + `arm/v7` -> `golden:latest-arm_v7` (adds `:latest` when untagged)."""
    last = tag.rsplit("/", 1)[-1]
    if ":" not in last:
        tag += ":latest"
    return f"{tag}-{arch.replace('/', '_')}"


def _add_bytes(tw: TarWriter, name: str, data: bytes) -> None:
    tw.add(TarHeader(name=name, mode=0o644, size=len(data)), data)


def write_docker_tarball(
    out: str | os.PathLike[str],
    tag: str,
    index: Blob,
    images: list[BuiltImage],
    layers: Iterable[BlobSource],
) -> Path:
    """Write a `docker load`-able tarball at `out` that also carries the OCI index."""
    out = Path(out).absolute()
    by_digest = _collect(images, layers)
    out.parent.mkdir(parents=True, exist_ok=True)
    entries = sorted(((docker_repo_tag(tag, img.arch), img) for img in images),
                     key=lambda e: e[0])
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            tw = TarWriter(f)
            seen: set[str] = set()
            manifest_json = []
            for repo_tag, img in entries:
                if img.config.digest not in seen:
                    _add_bytes(tw, img.config.digest, img.config.data)
                    seen.add(img.config.digest)
                layer_names = []
                for digest in manifest_layer_digests(img.manifest):
                    src = by_digest[digest]
                    name = f"{src.hex}.tar.gz"
                    layer_names.append(name)
                    if digest in seen:
                        continue
                    seen.add(digest)
                    hdr = TarHeader(name=name, mode=0o644, size=src.size)
                    if src.data is not None:
                        tw.add(hdr, src.data)
                    else:
                        with src.open_file() as lf:
                            tw.add(hdr, lf)
                manifest_json.append(
                    Struct([("Config", img.config.digest), ("RepoTags", [repo_tag]),
                            ("Layers", layer_names)])
                )
            _add_bytes(tw, "manifest.json", dumps(manifest_json))
            for _, img in entries:
                if img.manifest.digest not in seen:
                    _add_bytes(tw, img.manifest.digest, img.manifest.data)
                    seen.add(img.manifest.digest)
            _add_bytes(tw, "index.json", index.data)
            tw.close()
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
