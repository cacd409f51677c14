"""An OCI registry repository as a shared content store (`--content-store REGISTRY/REPO`).

`RegistryContentStore` keeps the ContentStore contract (builder/repo/store.py) over one
registry repository: `has` is a blob HEAD, `open` a GET hashed as it is read (into a temp
file, returned only when it hashes to its name), `put` a HEAD and, when the registry lacks the
blob, one upload. Auth and transport are the registry client's (builder/oci/registry.py:
credentials from the docker config, http for loopback hosts).

It also holds layer cache records (builder/layercache.py), so workers with separate local
caches share finished layers through it: a record is a small OCI artifact — an image manifest
with `artifactType` and config media type `application/vnd.apkimage.layer-record.v1+json`,
whose config blob is the record's JSON (the local cache's record bytes) and whose one layer
is the layer blob — tagged `layer-<key>` (70 characters; a tag may have 128). The registry
accepts the manifest only when both blobs are there, so a record found always has its blob
(until someone deletes it: then the lookup is a miss).

And it holds packages (builder/repo/fetch.py), so workers share what they downloaded from
APK repositories: a package is an artifact tagged `apk-<hex>`, the hex SHA-1 its index `C:`
names (44 characters), artifact type `application/vnd.apkimage.apk.v1`, one layer, the `.apk`
as it was downloaded (media type `application/vnd.apkimage.apk.v1.layer`), and annotations
naming the package, its arch and its `C:` (the config blob holds them too, as JSON of media
type `application/vnd.apkimage.apk.v1+json`: a blob per package, not one shared blob that
workers would race to upload).
Nothing here trusts a package: `find_package` only says which blob the tag names and how big
it is, `fetch_blob` checks the bytes against that digest, and the fetcher verifies the file
against the index record (size, `C:`, datahash) exactly as it verifies a download.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from builder.errors import FormatError, RegistryError
from builder.oci.layout import BlobSource
from builder.oci.registry import Registry, parse_reference
from builder.repo.store import (
    ALGORITHM,
    CHUNK,
    BlobNotFound,
    CorruptEntry,
    DigestMismatch,
    LocalContentStore,
    Source,
    parse_digest,
)

log = logging.getLogger(__name__)

MEDIA_RECORD = "application/vnd.apkimage.layer-record.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TAG_PREFIX = "layer-"
MEDIA_APK_ARTIFACT = "application/vnd.apkimage.apk.v1"
MEDIA_APK = "application/vnd.apkimage.apk.v1.layer"
MEDIA_APK_CONFIG = "application/vnd.apkimage.apk.v1+json"
APK_TAG_PREFIX = "apk-"
ANNOTATION_CHECKSUM = "dev.apkimage.apk.checksum"  # the index `C:` (Q1 form)
ANNOTATION_PACKAGE = "dev.apkimage.apk.package"  # name-version
ANNOTATION_ARCH = "dev.apkimage.apk.arch"
_SHA1_HEX = re.compile(r"[0-9a-f]{40}")


def record_tag(key: str) -> str:
    """The tag of the record of layer cache key `key` (64 hex digits)."""
    parse_digest(f"{ALGORITHM}:{key}")  # a key is a SHA-256: 64 lowercase hex digits
    return TAG_PREFIX + key


def package_tag(checksum_hex: str) -> str:
    """The tag of the package whose index `C:` is the SHA-1 `checksum_hex` (40 hex digits)."""
    if not isinstance(checksum_hex, str) or not _SHA1_HEX.fullmatch(checksum_hex):
        raise FormatError(f"malformed package checksum {checksum_hex!r}: expected 40 "
                          "lowercase hex digits")
    return APK_TAG_PREFIX + checksum_hex


@dataclass(frozen=True)
class StoredPackage:
    """What the manifest under a package's tag says of its one blob (not yet verified)."""

    digest: str  # sha256:<hex> of the .apk
    size: int
    where: str  # REGISTRY/REPO:apk-<hex>, for messages


class RegistryContentStore:
    """A ContentStore over the registry repository `ref` (`host[:port]/repo`)."""

    def __init__(self, ref: str, registry: Registry | None = None) -> None:
        r = parse_reference(ref)
        if r.tag or r.digest:
            raise RegistryError(f"content store {ref!r}: name a repository, not a tag or digest")
        self.ref = ref
        self.repo = r.repository
        self.registry = registry if registry is not None else Registry.for_host(r.registry)
        self.uploaded: list[str] = []  # digests this store uploaded (the others it had)

    def __repr__(self) -> str:
        return f"RegistryContentStore({self.ref!r})"

    # -- ContentStore --------------------------------------------------------------------

    def has(self, digest: str) -> bool:
        parse_digest(digest)
        return self.registry.blob_exists(self.repo, digest)

    def open(self, digest: str) -> BinaryIO:
        """The blob, downloaded into a temp file while hashed; BlobNotFound when the registry
        has none, CorruptEntry when what it sent hashes to anything else."""
        tmp = tempfile.TemporaryFile(prefix="apkimage-blob-")
        try:
            actual = self._download(digest, tmp)
            if actual != digest:
                raise CorruptEntry(self._where(digest), f"content hashes to {actual}")
            tmp.seek(0)
        except BaseException:
            tmp.close()
            raise
        return tmp

    def put(self, data: Source, digest: str | None = None) -> str:
        """Upload `data` unless the registry has its digest already (HEAD first). With
        `digest`, content that hashes to anything else is refused (DigestMismatch) before
        anything is sent."""
        with tempfile.TemporaryDirectory(prefix="apkimage-put-") as tmp:
            path, actual = self._materialise(data, Path(tmp))
            if digest is not None and actual != digest:
                raise DigestMismatch(f"content store {self.ref}", digest, actual)
            self.push_file(path, actual)
        return actual

    # -- beyond the protocol -------------------------------------------------------------

    def push_file(self, path: Path, digest: str) -> bool:
        """Upload the file at `path`, already hashed to `digest` by its writer, unless the
        registry has it (HEAD first); True when it was uploaded."""
        if self.registry.blob_exists(self.repo, digest):
            return False
        self.registry.upload_blob(self.repo, BlobSource.from_file(path, digest))
        self.uploaded.append(digest)
        return True

    def copy_into(self, digest: str, local: LocalContentStore) -> bool:
        """Pull the blob into `local` (streamed, hashed and renamed into place by its `put`);
        False when the registry has no such blob. DigestMismatch when it sends other bytes
        (nothing is stored)."""
        resp = self.registry.get_blob(self.repo, digest)
        if resp is None:
            return False
        with resp:
            try:
                local.put(cast(BinaryIO, _RawReader(resp.raw)), digest)
            except OSError as exc:  # the connection broke mid-body
                raise RegistryError(f"{self._where(digest)}: download failed: {exc}") from None
        return True

    def get_record(self, key: str) -> bytes | None:
        """The record JSON of layer key `key` (its config blob, verified), or None when the
        registry holds no record under that key. A damaged record is CorruptEntry."""
        tag = record_tag(key)
        raw = self.registry.find_manifest(self.repo, tag, MEDIA_MANIFEST)
        if raw is None:
            return None
        where = f"{self.ref}:{tag}"
        try:
            doc = json.loads(raw)
            config = doc["config"]
            digest, size = config["digest"], int(config["size"])
            if config.get("mediaType") != MEDIA_RECORD:
                raise ValueError(f"config media type {config.get('mediaType')!r}")
            parse_digest(digest)
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptEntry(where, f"not a layer record manifest ({exc})") from None
        if size > 1 << 20:
            raise CorruptEntry(where, f"record of {size} bytes")
        with self.open(digest) as f:
            return f.read()

    def put_record(self, key: str, record: bytes, blob_digest: str, blob_size: int,
                   media_type: str) -> str:
        """Store the record JSON of layer key `key`, whose blob is already in the registry,
        as the artifact tagged `layer-<key>`; returns the manifest digest."""
        return self._put_artifact(record_tag(key), MEDIA_RECORD, record, MEDIA_RECORD,
                                  (media_type, blob_digest, blob_size),
                                  {"dev.apkimage.layer-key": key})

    def find_package(self, checksum_hex: str) -> StoredPackage | None:
        """The blob stored for the package whose `C:` is `checksum_hex`, or None when the
        registry has no manifest under its tag. A manifest there that is not a package
        artifact of this `C:` (another artifact type, not exactly one `.apk` layer, another
        checksum) is CorruptEntry. Says nothing of the blob's bytes (see `fetch_blob`)."""
        from builder.util.checksums import parse_sha1

        tag = package_tag(checksum_hex)
        raw = self.registry.find_manifest(self.repo, tag, MEDIA_MANIFEST)
        if raw is None:
            return None
        where = f"{self.ref}:{tag}"
        try:
            doc = json.loads(raw)
            if doc.get("artifactType") != MEDIA_APK_ARTIFACT:
                raise ValueError(f"artifact type {doc.get('artifactType')!r}")
            if doc["config"].get("mediaType") != MEDIA_APK_CONFIG:
                raise ValueError(f"config media type {doc['config'].get('mediaType')!r}")
            layers = doc["layers"]
            if not isinstance(layers, list) or len(layers) != 1:
                raise ValueError(f"{len(layers) if isinstance(layers, list) else 'no'} layers")
            layer = layers[0]
            if layer.get("mediaType") != MEDIA_APK:
                raise ValueError(f"layer media type {layer.get('mediaType')!r}")
            digest, size = layer["digest"], layer["size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError(f"size {size!r}")
            parse_digest(digest)
            named = (doc.get("annotations") or {}).get(ANNOTATION_CHECKSUM)
            sha1 = parse_sha1(named) if isinstance(named, str) else None
            if sha1 is None or sha1.hex() != checksum_hex:
                raise ValueError(f"it names checksum {named!r}")
        except (ValueError, KeyError, TypeError, AttributeError, FormatError) as exc:
            raise CorruptEntry(where, f"not a package manifest ({exc})") from None
        return StoredPackage(digest, size, where)

    def fetch_blob(self, digest: str, out: BinaryIO, size: int) -> None:
        """Stream blob `digest`, which must be `size` bytes, into `out`, hashing it; reading
        stops past `size`. BlobNotFound when the registry has none, CorruptEntry when what
        it sends is another length or hashes to anything else (`out` then holds junk: the
        caller's temp file, dropped)."""
        actual = self._download(digest, out, limit=size)
        if actual != digest:
            raise CorruptEntry(self._where(digest), f"content hashes to {actual}")

    def put_package(self, checksum_hex: str, path: Path, digest: str, size: int,
                    annotations: dict[str, str]) -> bool:
        """Store the verified `.apk` at `path` (`size` bytes hashing to `digest`) as the
        package artifact of `C:` `checksum_hex`: its blob and its config (`annotations` as
        JSON: a blob of this package's own, so one claim on the package covers every upload
        of it) are uploaded unless the registry has them (HEAD first), then the manifest is
        put under the tag. True when the `.apk` was uploaded (False: the registry had it)."""
        tag = package_tag(checksum_hex)
        uploaded = self.push_file(path, digest)
        record = json.dumps(annotations, sort_keys=True, separators=(",", ":")).encode()
        self._put_artifact(tag, MEDIA_APK_ARTIFACT, record, MEDIA_APK_CONFIG,
                           (MEDIA_APK, digest, size), dict(annotations))
        return uploaded

    def _put_artifact(self, tag: str, artifact_type: str, config: bytes, config_type: str,
                      layer: tuple[str, str, int], annotations: dict[str, str]) -> str:
        """Tag `tag`: an artifact manifest of `config` (uploaded unless the registry has it)
        and one layer (media type, digest, size) already in the registry; its digest."""
        digest = f"{ALGORITHM}:{hashlib.sha256(config).hexdigest()}"
        if not self.registry.blob_exists(self.repo, digest):
            self.registry.upload_blob(self.repo, BlobSource(digest, len(config), data=config))
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": config_type, "digest": digest, "size": len(config)},
            "layers": [{"mediaType": layer[0], "digest": layer[1], "size": layer[2]}],
            "annotations": annotations,
        }, sort_keys=True, separators=(",", ":")).encode()
        return self.registry.put_manifest(self.repo, tag, manifest, MEDIA_MANIFEST)

    # -- internals -----------------------------------------------------------------------

    def _where(self, digest: str) -> str:
        return f"{self.ref}@{digest}"

    def _download(self, digest: str, out: BinaryIO, limit: int | None = None) -> str:
        """Blob `digest` streamed into `out`; the digest of what came. With `limit`, a body
        of any other length is CorruptEntry (reading stops one chunk past it)."""
        parse_digest(digest)
        resp = self.registry.get_blob(self.repo, digest)
        if resp is None:
            raise BlobNotFound(self._where(digest))
        h = hashlib.sha256()
        got = 0
        with resp:
            try:
                for chunk in resp.iter_content(CHUNK):
                    got += len(chunk)
                    if limit is not None and got > limit:
                        raise CorruptEntry(self._where(digest),
                                           f"more than the {limit} bytes its manifest says")
                    h.update(chunk)
                    out.write(chunk)
            except OSError as exc:
                raise RegistryError(f"{self._where(digest)}: download failed: {exc}") from None
            except Exception as exc:  # requests' own errors for a broken body
                if exc.__class__.__module__.startswith(("requests", "urllib3")):
                    raise RegistryError(f"{self._where(digest)}: download failed: {exc}") \
                        from None
                raise
        if limit is not None and got != limit:
            raise CorruptEntry(self._where(digest),
                               f"{got} bytes, not the {limit} its manifest says")
        return f"{ALGORITHM}:{h.hexdigest()}"

    @staticmethod
    def _materialise(data: Source, tmp: Path) -> tuple[Path, str]:
        """`data` as a file (a path given stays where it is) and its digest."""
        import os

        if isinstance(data, os.PathLike):
            path = Path(data)
            with open(path, "rb") as f:
                return path, f"{ALGORITHM}:{hashlib.file_digest(f, ALGORITHM).hexdigest()}"
        path = tmp / "blob"
        h = hashlib.sha256()
        with open(path, "wb") as out:
            if isinstance(data, bytes | bytearray | memoryview):
                h.update(data)
                out.write(data)
            else:
                while chunk := data.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
        return path, f"{ALGORITHM}:{h.hexdigest()}"


class _RawReader:
    """A urllib3 response body read with content decoding (a registry may gzip a blob's
    transfer), as the binary stream LocalContentStore.put reads."""

    def __init__(self, raw: object) -> None:
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        return self.raw.read(n, decode_content=True)  # type: ignore[attr-defined]
