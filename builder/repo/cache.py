"""The on-disk cache: content-addressed, written atomically, shared safely by concurrent builds.

Layout under `cache_dir` (default `$XDG_CACHE_HOME/apkimage`, i.e. `~/.cache/apkimage`):

    v1/
      apk/<cc>/<chex>/              one directory per package, keyed by its index `C:`:
                                    <chex> = hex SHA-1 of the package's control gzip member
                                    (the `Q1` base64 of `C:` decoded), <cc> its first 2 digits
        package.apk                 the .apk exactly as fetched (remote repositories only:
                                    local ones are read in place, but derived sections of
                                    their packages may still live in this directory)
        data.tar                    the decompressed data section (fast `expand`,
                                    builder/expand/cached.py)
        tarindex.json               its tar-header index (TarEntry rows, compact JSON)
        control.json                control info install needs: .PKGINFO fields, scripts
                                    (base64), control SHA-1
        blocks.json                 DEFLATE block index of the data section (on demand)
        expand.json                 manifest of the above, written LAST: size + SHA-256 of
                                    each JSON artefact, size + CRC-32 of data.tar; an
                                    artefact not listed there, or not matching it, is rebuilt
        .expand.lock                flock(2) taken while the artefacts are (re)built
        apk.verified                stamp (builder/repo/stamp.py): identity of the .apk file
                                    (the cached copy or the local repository's) whose data
                                    section last hashed to its datahash
        data.tar.verified           stamp: identity of data.tar when it last matched the
                                    manifest's CRC-32
      index/<uu>/<uhash>.json       one record per remote URL kept by URL (APKINDEX files,
                                    keyring keys), <uhash> = hex SHA-256 of the URL:
                                    {"url", "sha256", "size", "etag", "last_modified"}
                                    (the validators are sent on conditional GETs)
      blobs/sha256/<hex>            content-addressed bodies of those URLs, verified by name
                                    on every read: a LocalContentStore (builder/repo/store.py)
                                    rooted at v1/blobs
      index-parsed/<hh>/<sha256>-<keys>-<t|u>.json
                                    an index verified with a keyring (fingerprint <keys>) and
                                    parsed, by the index's SHA-256 (builder/repo/indexes.py)

Rules that make two builds at once safe:
- Every file is written to a temp file in the directory of its final name, flushed,
  fsync'd and `os.replace`d into place (builder/util/atomic.py), so a reader sees either no
  file or a whole one.
- Entries are never deleted or truncated in place, only replaced by a verified copy; a
  reader holding an open file keeps its (identical) bytes.
- A record that points at content (index JSON -> blob) is written after the content, so a
  record never names a missing blob except through outside damage, which reads detect.
- Nothing read from the cache is trusted: blobs are re-hashed against their name, packages
  are re-verified against the index (`C:`, `datahash`, size) by the fetch stage. The two
  big content checks (a package's datahash, a data tar's CRC-32) are skipped while a
  verification stamp (`*.verified`, builder/repo/stamp.py) shows the file has not changed
  since it last passed them.

Faults of the cache itself — a directory that cannot be created or written, a lock that
cannot be taken, an entry that cannot be read or replaced — raise CacheError naming the
path; a damaged entry found by a check is CorruptEntry, which callers answer by refetching.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from builder.errors import CacheError
from builder.repo.store import ALGORITHM, CorruptEntry, LocalContentStore
from builder.util.atomic import AtomicFile
from builder.util.checksums import checksum_hex

LAYOUT_VERSION = "v1"
_HEX64 = re.compile(r"[0-9a-f]{64}")
PACKAGE_FILE = "package.apk"
EXPANDED_DATA_TAR = "data.tar"
EXPANDED_TAR_INDEX = "tarindex.json"
EXPANDED_CONTROL = "control.json"
EXPANDED_BLOCKS = "blocks.json"
EXPANDED_MANIFEST = "expand.json"
EXPANDED_LOCK = ".expand.lock"
VERIFIED_APK = "apk.verified"
VERIFIED_DATA_TAR = "data.tar.verified"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/apkimage`, falling back to `~/.cache/apkimage`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "apkimage"


class CacheFile(AtomicFile):
    """An AtomicFile in the cache whose faults are CacheError: an OSError raised by `commit`
    names the entry, one escaping the `with` block (writing or reading back the temp file)
    the entry's directory."""

    def commit(self, dest: Path) -> None:
        try:
            super().commit(dest)
        except OSError as exc:
            raise CacheError(dest, f"cannot store: {exc.strerror or exc}") from None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()
        if isinstance(exc, OSError):
            # the directory: the temp file's name is gone with it (and was never the entry)
            raise CacheError(self.path.parent, f"cannot write: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class ExpandedPaths:
    """The expand artefacts of one package directory (see the module docstring)."""

    dir: Path

    @property
    def data_tar(self) -> Path:
        return self.dir / EXPANDED_DATA_TAR

    @property
    def tar_index(self) -> Path:
        return self.dir / EXPANDED_TAR_INDEX

    @property
    def control(self) -> Path:
        return self.dir / EXPANDED_CONTROL

    @property
    def blocks(self) -> Path:
        return self.dir / EXPANDED_BLOCKS

    @property
    def manifest(self) -> Path:
        return self.dir / EXPANDED_MANIFEST

    @property
    def lock(self) -> Path:
        return self.dir / EXPANDED_LOCK


@dataclass
class IndexRecord:
    """What the cache knows about one remote index URL."""

    url: str
    sha256: str
    size: int
    etag: str = ""
    last_modified: str = ""


class Cache:
    """The cache rooted at `root` (see the module docstring for the layout)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.base = self.root / LAYOUT_VERSION
        self.blobs = LocalContentStore(self.base / "blobs")

    # -- generic -------------------------------------------------------------------------

    def atomic(self, directory: Path) -> CacheFile:
        """A temp file in `directory` (created if needed), to `commit()` to a final name;
        CacheError naming `directory` when it cannot be made."""
        try:
            return CacheFile(directory)
        except OSError as exc:
            raise CacheError(directory, f"cannot write: {exc.strerror or exc}") from None

    def write_bytes(self, dest: Path, data: bytes) -> None:
        """Atomically (temp + fsync + rename) write `data` to `dest`; CacheError naming the
        path when that fails."""
        with self.atomic(dest.parent) as tmp:
            tmp.file.write(data)
            tmp.commit(dest)

    # -- packages ------------------------------------------------------------------------

    def package_dir(self, checksum: str, source: str = "") -> Path:
        """The directory of the package whose index `C:` is `checksum` (`source` names the
        package in errors)."""
        chex = checksum_hex(checksum, source)
        return self.base / "apk" / chex[:2] / chex

    def package_path(self, checksum: str, source: str = "") -> Path:
        return self.package_dir(checksum, source) / PACKAGE_FILE

    def package_dir_hex(self, sha1_hex: str) -> Path:
        """`package_dir` from the hex SHA-1 of the control member (what `C:` encodes)."""
        return self.base / "apk" / sha1_hex[:2] / sha1_hex

    def expanded_paths(self, sha1_hex: str) -> ExpandedPaths:
        """Where the fast `expand` stage keeps the derived artefacts of that package."""
        return ExpandedPaths(self.package_dir_hex(sha1_hex))

    # -- blobs ---------------------------------------------------------------------------

    # The URL bodies live in `self.blobs` (a ContentStore); these take the bare hex that
    # index records carry.

    @property
    def blob_dir(self) -> Path:
        return self.blobs.blob_dir

    def blob_path(self, sha256_hex: str) -> Path:
        return self.blobs.path(f"{ALGORITHM}:{sha256_hex}")

    def read_blob(self, sha256_hex: str) -> bytes:
        """The blob's bytes, re-hashed; raises CorruptEntry if missing (BlobNotFound) or not
        matching."""
        return self.blobs.read_bytes(f"{ALGORITHM}:{sha256_hex}")

    def put_blob(self, data: bytes, sha256_hex: str | None = None) -> str:
        """Store `data` as a blob (checked against `sha256_hex` when given: DigestMismatch
        if it differs); returns its hex SHA-256."""
        digest = self.blobs.put(data, None if sha256_hex is None else f"{ALGORITHM}:{sha256_hex}")
        return digest.removeprefix(f"{ALGORITHM}:")

    # -- index records -------------------------------------------------------------------

    def index_record_path(self, url: str) -> Path:
        uhash = hashlib.sha256(url.encode()).hexdigest()
        return self.base / "index" / uhash[:2] / f"{uhash}.json"

    def load_index_record(self, url: str) -> IndexRecord | None:
        """The record for `url`, None when absent; raises CorruptEntry when not a valid
        record, CacheError when the file cannot be read at all."""
        path = self.index_record_path(url)
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheError(path, f"cannot read: {exc.strerror or exc}") from None
        try:
            obj = json.loads(raw)
            record = IndexRecord(**obj)
        except (ValueError, TypeError) as exc:
            raise CorruptEntry(path, f"unreadable index record ({exc})") from None
        if record.url != url:
            raise CorruptEntry(path, f"record is for {record.url}, not {url}")
        if not _HEX64.fullmatch(str(record.sha256)):
            raise CorruptEntry(path, f"record names no valid blob ({record.sha256!r})")
        return record

    def store_index_record(self, record: IndexRecord) -> None:
        data = json.dumps(asdict(record), sort_keys=True).encode() + b"\n"
        self.write_bytes(self.index_record_path(record.url), data)
