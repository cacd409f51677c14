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
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import BinaryIO, cast

from builder.errors import RegistryError
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


def record_tag(key: str) -> str:
    """The tag of the record of layer cache key `key` (64 hex digits)."""
    parse_digest(f"{ALGORITHM}:{key}")  # a key is a SHA-256: 64 lowercase hex digits
    return TAG_PREFIX + key


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
        config = f"{ALGORITHM}:{hashlib.sha256(record).hexdigest()}"
        if not self.registry.blob_exists(self.repo, config):
            self.registry.upload_blob(self.repo, BlobSource(config, len(record), data=record))
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "artifactType": MEDIA_RECORD,
            "config": {"mediaType": MEDIA_RECORD, "digest": config, "size": len(record)},
            "layers": [{"mediaType": media_type, "digest": blob_digest, "size": blob_size}],
            "annotations": {"dev.apkimage.layer-key": key},
        }, sort_keys=True, separators=(",", ":")).encode()
        return self.registry.put_manifest(self.repo, record_tag(key), manifest, MEDIA_MANIFEST)

    # -- internals -----------------------------------------------------------------------

    def _where(self, digest: str) -> str:
        return f"{self.ref}@{digest}"

    def _download(self, digest: str, out: BinaryIO) -> str:
        parse_digest(digest)
        resp = self.registry.get_blob(self.repo, digest)
        if resp is None:
            raise BlobNotFound(self._where(digest))
        h = hashlib.sha256()
        with resp:
            try:
                for chunk in resp.iter_content(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            except OSError as exc:
                raise RegistryError(f"{self._where(digest)}: download failed: {exc}") from None
            except Exception as exc:  # requests' own errors for a broken body
                if exc.__class__.__module__.startswith(("requests", "urllib3")):
                    raise RegistryError(f"{self._where(digest)}: download failed: {exc}") \
                        from None
                raise
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
