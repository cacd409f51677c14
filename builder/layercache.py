"""The layer cache: a finished layer (diffID, blob digest, size, media type) reused by any later
build — of the same image or another — whose layer would have the same bytes, without tarring,
hashing or compressing it again (`--layer-cache`).

Key: a SHA-256 over everything that determines a layer's bytes —
- the layer writer (implementation, format), the compressor setting, and a fingerprint of the
  code that writes layer bytes (the source of builder/layer, deflate, compress, the layer and
  compress stages, gotar, tar kinds, layering and this module) and of the compression
  libraries' versions (zlib, ISA-L; zstandard for zstd), so a change to either never reuses
  an old layer;
- the layer's entries in walk order, each with its full tar metadata and the identity of its
  content: a byte range of a package's data tar is named by that package's `C:` checksum
  (which covers the data section through its datahash), any other content by its SHA-256;
- for a layer of a layered image, its place (package layer or top) and its packages' `C:`;
  for a whole-image layer, every package's `C:` (the stitched format reuses their streams).
So two images sharing a package layer share its key; a bumped package changes the key of
exactly the layers that hold it.

Store (under the cache's `v1/`): `layers/<kk>/<key>.json` the record (with the SHA-256 of its
own fields, so damage to any of them is caught); the blob in the content
store (`blobs/sha256/<hex>`), copied there — never hardlinked to an output, so a build's
output can be changed without touching the cache. On reuse the blob is copied to the build's
work directory after a check: a verification stamp (builder/repo/stamp.py) that shows the
blob unchanged since it last hashed to its digest, else a full re-hash (which writes the
stamp). A record whose blob is missing or does not match is dropped and the layer built again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from builder.errors import CacheError
from builder.fs.extent import Extent
from builder.fs.kinds import FILE, HARDLINK
from builder.repo.stamp import check_started, identity, is_stamped, write_stamp
from builder.util.atomic import copy_file_into

if TYPE_CHECKING:
    from builder.expand.model import ExpandedPackage
    from builder.fs.model import FsModel, Meta
    from builder.layering import LayerPart
    from builder.oci.content_store import RegistryContentStore
    from builder.repo.cache import Cache

log = logging.getLogger(__name__)

VERSION = 1
# The code whose output is a layer's bytes (relative to the builder package).
_LAYER_CODE = ("layer", "deflate", "compress", "stages/layer.py", "stages/compress.py",
               "gotar.py", "fs/kinds.py", "layering.py", "layercache.py")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CachedLayer:
    """What a layer cache record says of a layer."""

    key: str
    diff_id: str  # "sha256:<hex>" of the uncompressed tar
    digest: str  # "sha256:<hex>" of the blob
    size: int  # blob bytes
    media_type: str
    tar_size: int  # uncompressed bytes
    entries: int


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of the source of the code that writes layer bytes (read once per process) and
    of the versions of the DEFLATE libraries that compress them."""
    import zlib

    import isal

    root = Path(__file__).resolve().parent
    h = hashlib.sha256(f"zlib {zlib.ZLIB_RUNTIME_VERSION} isal {isal.__version__}\n".encode())
    for rel in _LAYER_CODE:
        p = root / rel
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(root)).encode() + b"\0")
            h.update(f.read_bytes())
    return h.hexdigest()


def layer_key(fs: FsModel, expanded: Sequence[ExpandedPackage], part: LayerPart | None,
              writer: str, compressor: str, settings: dict[str, str]) -> str:
    """The cache key of one layer (see the module docstring)."""
    from builder.layer.tarmap import image_names, layer_walk

    owner = {os.fspath(e.data_tar): e.package.checksum for e in expanded}
    # Headers name owners from the image's own account files: a layer's bytes depend on the
    # names of the uids/gids it holds (each entry line carries them).
    names = image_names(fs, "etc/passwd"), image_names(fs, "etc/group")
    h = hashlib.sha256()
    library = ""
    if compressor.startswith("zstd"):
        import zstandard

        library = f"zstandard {zstandard.__version__} {zstandard.ZSTD_VERSION}"
    h.update(json.dumps({"version": VERSION, "code": code_fingerprint(), "writer": writer,
                         "compressor": compressor, "settings": settings, "library": library},
                        sort_keys=True).encode() + b"\n")
    if part is None:
        h.update(b"image\n")
        packages: Iterable[ExpandedPackage] = expanded
        entries: Iterable[tuple[str, Meta, bytes | None]] = \
            ((path, m, None) for path, m in layer_walk(fs))
    else:
        group = part.group
        mine = set(group.packages) if group is not None else set()
        h.update(b"top layer\n" if group is None else b"package layer\n")
        packages = [e for e in expanded if e.package.name in mine] if group is not None \
            else expanded
        entries = ((e.path, e.meta, e.content) for e in part.entries)
    lines = [f"pkg {e.package.name} {e.package.checksum}\n" for e in packages]
    lines += [_entry_line(fs, path, m, content, owner, names) for path, m, content in entries]
    h.update("".join(lines).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _entry_line(fs: FsModel, path: str, m: Meta, content: bytes | None,
                owner: dict[str, str], names: tuple[dict[int, str], dict[int, str]]) -> str:
    xattrs = ",".join(f"{k}={v}" for k, v in sorted(m.xattrs.items())) if m.xattrs else ""
    if content is not None:
        ident = "sha256:" + hashlib.sha256(content).hexdigest()
    elif m.kind == FILE or m.kind == HARDLINK:
        ident = _content_identity(fs.content(path), owner)
    else:
        ident = ""
    return (f"{path}\0{m.kind}\0{m.mode}\0{m.uid}:{names[0].get(m.uid, '')}\0{m.gid}:"
            f"{names[1].get(m.gid, '')}\0{m.mtime}\0{m.size}\0{m.linkname}\0{m.devmajor}"
            f"\0{m.devminor}\0{xattrs}\0{ident}\n")


def _content_identity(content: bytes | Extent, owner: dict[str, str]) -> str:
    if isinstance(content, Extent):
        pkg = owner.get(os.fspath(content.path))
        if pkg is not None:
            return f"{pkg}@{content.offset}+{content.size}"
        h = hashlib.sha256()
        with open(content.path, "rb") as f:
            f.seek(content.offset)
            left = content.size
            while left and (chunk := f.read(min(_CHUNK, left))):
                h.update(chunk)
                left -= len(chunk)
        return "sha256:" + h.hexdigest()
    return "sha256:" + hashlib.sha256(content).hexdigest()


def _record_sum(doc: dict[str, object]) -> str:
    """SHA-256 of a record's fields (canonical JSON): stored in the record, so a damaged
    field — a diffID, a media type — is caught, not put into an image."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


Claim: TypeAlias = Callable[[str], AbstractContextManager[bool]]
_claim: Claim | None = None


def set_claim(claim: Claim | None) -> None:
    """Install (or with None remove) this process's claim on layer keys: `claim(key)` is a
    context manager held from a miss of both tiers until the layer is stored, so that another
    process of a cluster building the same layer waits and then pulls it (builder/fanout.py
    installs a Dask lock). It yields False when it gave up waiting: the layer is then built
    anyway (twice in the cluster, the same bytes)."""
    global _claim
    _claim = claim


class KnownBlobs:
    """Layer blobs this process put into its outputs (build-many's layouts), by digest, so
    that a later image reusing one links that file (the OCI writer hardlinks its sources)
    instead of copying the cached blob once more. Outputs of one run then share these files
    (blobs are content-addressed and immutable in an OCI layout); the cache itself never
    shares a file with an output.

    A file is vouched for only while its identity (device, inode, size, mtime, ctime: see
    builder/repo/stamp.py) is what it was when `add` saw it, right after this process wrote
    it from bytes it had hashed or checked: any change to its bytes changes its ctime. The
    stamps' settle rule is not applied (these files are seconds old by design): a write
    within the same timestamp tick as this process's last link to the file would go
    unnoticed, a window of milliseconds inside a running build's own output directory."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[Path, dict[str, int]]] = {}

    def add(self, digest: str, path: Path) -> None:
        """`path` holds the blob `digest`, as this process has just written it."""
        self._files[digest] = (path, identity(path.stat()))

    def find(self, digest: str, size: int) -> Path | None:
        """A file holding blob `digest` of `size` bytes, unchanged since it was added."""
        entry = self._files.get(digest)
        if entry is None:
            return None
        path, known = entry
        try:
            st = path.stat()
        except OSError:
            st = None
        if st is None or identity(st) != known or st.st_size != size:
            del self._files[digest]
            return None
        return path


class LayerCache:
    """Records and blobs of finished layers in one cache; with `content_store`
    (`REGISTRY/REPO`) a second, shared tier behind it (builder/oci/content_store.py): a local
    miss looks the key up there and pulls record and blob into the local cache, and a layer
    built here is pushed there (blob once: HEAD first; then the record)."""

    def __init__(self, cache: Cache, content_store: str = "") -> None:
        self.cache = cache
        self.root = cache.base / "layers"
        self.hits = self.misses = 0  # hits include remote_hits
        self.remote_hits = self.remote_pushes = 0
        self.remote: RegistryContentStore | None = None
        if content_store:  # the registry client (requests) is loaded only then
            from builder.oci.content_store import RegistryContentStore

            self.remote = RegistryContentStore(content_store)
        self._claims: dict[str, ExitStack] = {}

    def get(self, key: str, dest: Path, known: KnownBlobs | None = None
            ) -> tuple[CachedLayer, Path] | None:
        """The layer recorded under `key` and where its blob now is: a file `known` holds for
        its digest (an output of this process, see `KnownBlobs`), else the cached blob
        checked and copied to `dest`; from the local cache, else (with a content store) from
        the registry, pulled into the local cache first. None when neither has it; then,
        with a claim installed (`set_claim`), the key stays claimed until `put` or
        `release`."""
        found = self._get_local(key, dest, known)
        if found is not None or self.remote is None:
            return found
        found = self._get_remote(key, dest, known)
        if found is not None or _claim is None:
            return found
        stack = ExitStack()
        stack.enter_context(_claim(key))
        self._claims[key] = stack
        found = self._get_remote(key, dest, known)  # the claim's last holder may have it
        if found is not None:
            self.release(key)
        return found

    def put(self, layer: CachedLayer, blob: Path) -> None:
        """Record `layer`, whose blob (already hashed to `layer.digest` by its writer) is at
        `blob`, locally and then in the content store; the key's claim is released."""
        try:
            self._put_local(layer, blob)
            if self.remote is not None:
                if self.remote.push_file(blob, layer.digest):
                    self.remote_pushes += 1
                record = self._record_path(layer.key)
                try:
                    raw = record.read_bytes()
                except OSError as exc:
                    raise CacheError(record, f"cannot read: {exc.strerror or exc}") from None
                self.remote.put_record(layer.key, raw, layer.digest, layer.size,
                                       layer.media_type)
        finally:
            self.release(layer.key)

    def release(self, key: str) -> None:
        """Give up this cache's claim on `key`, if it holds one (a build that failed)."""
        stack = self._claims.pop(key, None)
        if stack is not None:
            stack.close()

    def _get_remote(self, key: str, dest: Path, known: KnownBlobs | None
                    ) -> tuple[CachedLayer, Path] | None:
        """Record and blob of `key` pulled from the content store into the local cache,
        then read as a local hit (every local check applies); None on a miss there. A damaged
        record or blob in the registry is a warning and a miss."""
        from builder.repo.store import CorruptEntry, DigestMismatch

        assert self.remote is not None
        try:
            raw = self.remote.get_record(key)
            if raw is None:
                return None
            digest = json.loads(raw)["digest"]
            if not isinstance(digest, str):
                raise ValueError(f"digest {digest!r}")
            if not self.cache.blobs.has(digest) and not self.remote.copy_into(
                    digest, self.cache.blobs):
                log.warning("layer cache: %s has the record of %s but not its blob %s; "
                            "building the layer", self.remote.ref, key, digest)
                return None
        except (CorruptEntry, DigestMismatch, ValueError, KeyError, TypeError) as exc:
            log.warning("layer cache: record %s in %s is damaged (%s); building the layer",
                        key, self.remote.ref, exc)
            return None
        self.cache.write_bytes(self._record_path(key), raw)
        found = self._get_local(key, dest, known)
        self.misses -= 1  # the first local lookup counted this one
        if found is not None:
            self.remote_hits += 1
        return found

    def _record_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def _stamp_path(self, hex_digest: str) -> Path:
        return self.root / "stamps" / f"{hex_digest}.verified"

    def _get_local(self, key: str, dest: Path, known: KnownBlobs | None
                   ) -> tuple[CachedLayer, Path] | None:
        """The layer recorded under `key` and its blob: a file `known` vouches for, else the
        cached blob checked and copied to `dest`; None when there is none (or what there was
        is damaged: then it is dropped)."""
        path = self._record_path(key)
        try:
            doc = json.loads(path.read_bytes())
            if not isinstance(doc, dict):
                raise ValueError("not a record")
            check = doc.pop("sha256", None)
            if check is None:
                raise ValueError("no checksum: made by an older apkimage")
            if check != _record_sum(doc):  # every field counts: diff_id, media type, ...
                raise ValueError("record does not match its own checksum")
            layer = CachedLayer(**doc)
            if layer.key != key:
                raise ValueError(f"record names key {layer.key}")
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("layer cache: %s is damaged (%s); building the layer again", path, exc)
            self._drop(path)
            self.misses += 1
            return None
        here = known.find(layer.digest, layer.size) if known is not None else None
        if here is not None:
            self.hits += 1
            return layer, here
        blob = self.cache.blobs.path(layer.digest)
        why = self._copy_checked(blob, layer, dest)
        if why is not None:
            log.warning("layer cache: blob %s of %s %s; building the layer again",
                        layer.digest, path, why)
            self._drop(path)
            self._drop(blob)  # content not matching its name is no blob of this store
            self.misses += 1
            return None
        self.hits += 1
        return layer, dest

    def _put_local(self, layer: CachedLayer, blob: Path) -> None:
        """Record `layer`, whose blob (already hashed to `layer.digest` by its writer) is at
        `blob`: the blob is copied into the content store, then the record written."""
        store = self.cache.blobs
        dest = store.path(layer.digest)
        try:
            if not dest.is_file() or dest.stat().st_size != layer.size:
                with self.cache.atomic(dest.parent) as tmp:
                    copy_file_into(blob, tmp.file)
                    tmp.commit(dest)
        except OSError as exc:
            raise CacheError(dest, f"cannot store layer blob: {exc.strerror or exc}") from None
        doc: dict[str, object] = asdict(layer)
        doc["sha256"] = _record_sum(doc)
        self.cache.write_bytes(self._record_path(layer.key),
                               json.dumps(doc, sort_keys=True).encode())

    def _copy_checked(self, blob: Path, layer: CachedLayer, dest: Path) -> str | None:
        """Copy `blob` to `dest` when it holds the layer's bytes (None); else say what is
        wrong and leave no `dest`. A stamp spares the hash; without one the bytes are hashed
        as they are copied (one read), and a match writes the stamp."""
        try:
            st = blob.stat()
        except FileNotFoundError:
            return "is missing"
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        if st.st_size != layer.size:
            return f"has {st.st_size} bytes, not {layer.size}"
        stamp = self._stamp_path(layer.digest.removeprefix("sha256:"))
        facts = {"digest": layer.digest}
        stamped = is_stamped(stamp, st, facts)
        started = check_started()
        h = hashlib.sha256()
        try:
            if stamped:
                shutil.copyfile(blob, dest)
                return None
            with open(blob, "rb") as src, open(dest, "wb") as out:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            after = blob.stat()
        except OSError as exc:
            self._drop(dest)
            if exc.filename is not None and Path(exc.filename) == dest:
                raise CacheError(blob, f"cannot copy to {dest}: {exc.strerror or exc}") \
                    from None
            return f"cannot be read ({exc.strerror})"
        if "sha256:" + h.hexdigest() != layer.digest:
            self._drop(dest)
            return f"hashes to sha256:{h.hexdigest()}"
        write_stamp(stamp, st, after, facts, started)
        return None

    def _drop(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
