"""Getting bytes from repositories: the `Fetcher` (cache + HTTP + offline guard + counters).
The `fetch` stage's implementations over it are in builder/repo/fetch_packages.py.

The Fetcher is the only place that talks to the network. In offline mode it never creates
an HTTP session: every path that would need one goes through `_session_for()` or, for an
index's conditional GET on the standard library, `_revalidate()`, both of which raise
`FetchError("offline: would fetch <url>")` instead — so "offline reaches no repository"
(and, without a content store, opens no socket) holds by construction, not by each caller
remembering to check.

Fetched content is handed to a caller-supplied check (`parse` for indexes, `verify` for
packages) *before* the cache advertises it, so an entry in the cache has passed that check
at least once; reads re-run the check and refetch (or, offline, fail naming the entry).

With a content store (`content_store`, `REGISTRY/REPO`: BuildOptions.content_store,
builder/oci/content_store.py) the cache has a second, shared tier for packages: a remote
package the local cache lacks (or holds damaged) is looked up there by its `C:` first and,
when found, pulled into a temp file of the cache and verified with the very `verify` a
download gets (index size, `C:`, datahash) before it is committed; a stored package that
fails any check is a warning and a normal download. A package found nowhere is downloaded
and then pushed (blob HEAD first). While downloading it, a cluster's worker holds a claim on
it (`set_package_claim`, builder/fanout.py: a `distributed.Lock`), so a second worker needing
it waits and then pulls it: one download per cluster. Only `_package_store()` makes the
registry client, and only with a content store: that registry is the one peer an offline
fetcher may reach (a tier of the cache, read on a local miss; never written offline, since
nothing is downloaded).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, TypeAlias, TypeVar

from builder.apk.model import Package
from builder.errors import FetchError, FormatError, VerificationError
from builder.progress import NULL, NullProgress
from builder.repo.cache import Cache, CorruptEntry, IndexRecord
from builder.repo.http import Download, HttpOptions, download, make_session, revalidate
from builder.repo.repository import INDEX_FILENAME, Repository
from builder.repo.store import BlobNotFound

if TYPE_CHECKING:
    import requests

    from builder.oci.content_store import RegistryContentStore


log = logging.getLogger(__name__)
T = TypeVar("T")

Claim: TypeAlias = Callable[[str], AbstractContextManager[bool]]
_package_claim: Claim | None = None


def set_package_claim(claim: Claim | None) -> None:
    """Install (or with None remove) this process's claim on packages: `claim(hex)`, the hex
    SHA-1 of a package's `C:`, is a context manager held while a package that neither the
    local cache nor the content store has is downloaded and pushed, so that another process
    of a cluster needing it waits and then pulls it from the store (builder/fanout.py
    installs a Dask lock). It yields False when it gave up waiting: the package is then
    downloaded anyway. Without a claim (the local executor) nothing is locked."""
    global _package_claim
    _package_claim = claim


@dataclass
class FetchStats:
    """Counters for spans. `bytes_fetched` is network bytes only; local reads are separate."""

    requests: int = 0  # HTTP GETs issued (retries inside one GET not counted)
    bytes_fetched: int = 0
    bytes_read: int = 0  # bytes read from local repositories
    cache_hits: int = 0  # packages and indexes served from the cache (incl. 304s)
    cache_misses: int = 0
    not_modified: int = 0  # conditional index GETs answered 304
    corrupt_entries: int = 0  # cache entries that failed their check
    store_hits: int = 0  # packages pulled from the content store (verified as downloads are)
    store_pushes: int = 0  # packages downloaded here and stored in the content store
    store_refused: int = 0  # content-store packages refused by a check (then downloaded)
    store_bytes: int = 0  # bytes pulled from the content store (not in bytes_fetched)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Fetcher:
    """Holds the HTTP session (created on first use, never when offline), the cache and
    counters for one build. Thread-safe for concurrent `fetch_package` calls."""

    def __init__(
        self,
        cache_dir: Path | str | None = None,
        *,
        offline: bool = False,
        ca_file: str | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        pool_size: int = 8,
        max_response_bytes: int | None = None,
        cache: Cache | None = None,
        content_store: str = "",
    ) -> None:
        self.cache = cache if cache is not None else Cache(cache_dir)
        self.offline = offline
        # REGISTRY/REPO sharing packages between caches (see the module docstring)
        self.content_store = content_store
        self._store: RegistryContentStore | None = None
        # timeout, retries, backoff: None takes APKIMAGE_HTTP_* from the environment, else
        # the defaults (builder/repo/http.py)
        self.http = HttpOptions.configured(
            timeout=timeout, retries=retries, backoff=backoff, pool_size=pool_size,
            ca_file=ca_file,
        )
        self.max_response_bytes = max_response_bytes
        self.stats = FetchStats()
        # Packages done and bytes downloaded, for a status line (builder/progress.py).
        self.progress: NullProgress = NULL
        self._session: requests.Session | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _session_for(self, url: str) -> requests.Session:
        """The build's session; with `_revalidate`, the only gates between this process and
        the network."""
        if self.offline:
            raise FetchError(f"offline: would fetch {url}")
        with self._lock:
            if self._session is None:
                self._session = make_session(self.http)
            return self._session

    def _revalidate(self, url: str, conditional: dict[str, str]
                    ) -> tuple[Download, bytes] | None:
        """A conditional GET without the session (builder/repo/http.py `revalidate`)."""
        if self.offline:
            raise FetchError(f"offline: would fetch {url}")
        return revalidate(url, conditional, self.http, self.max_response_bytes)

    def _package_store(self) -> RegistryContentStore:
        """The content store's client (made on first use; only with a content store)."""
        assert self.content_store
        with self._lock:
            if self._store is None or self._store.ref != self.content_store:
                from builder.oci.content_store import RegistryContentStore

                self._store = RegistryContentStore(self.content_store)
            return self._store

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    # -- indexes -------------------------------------------------------------------------

    def fetch_index(
        self, repo: Repository, arch: str, parse: Callable[[bytes, str], T]
    ) -> T | None:
        """`parse(data, source)` of the repository's APKINDEX for `arch`.

        Local repositories are read in place (None when the index file does not exist).
        Remote ones are revalidated with a conditional GET against the cached copy (ETag /
        Last-Modified); offline, the cached copy is used or FetchError names what is missing.
        `parse` runs before a new download is cached, so a bad index is never stored.
        """
        url = repo.index_url(arch)
        if not repo.is_remote:
            path = repo.local_path / arch / INDEX_FILENAME
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise FetchError(f"{path}: cannot read index: {exc.strerror}") from exc
            self._count(bytes_read=len(data))
            return parse(data, str(path))

        return self.fetch_url(url, parse, what="index")

    def fetch_url(
        self, url: str, parse: Callable[[bytes, str], T], what: str = "file"
    ) -> T:
        """`parse(data, url)` of a remote file kept in the cache by URL (indexes, keys).

        Online: a conditional GET (ETag / Last-Modified) revalidates the cached copy, a 304
        reuses it. Offline: the cached copy, or FetchError naming what is missing. `parse`
        runs before a new download is cached, so content it rejects is never stored.
        """
        record, cached = self._cached_url(url, what)
        if self.offline:
            if cached is None:
                raise FetchError(
                    f"offline: {what} {url} is not in the cache {self.cache.root} "
                    "(run once online to fill it)"
                )
            self._count(cache_hits=1)
            return parse(cached, url)

        conditional: dict[str, str] = {}
        if record is not None and cached is not None:
            if record.etag:
                conditional["If-None-Match"] = record.etag
            if record.last_modified:
                conditional["If-Modified-Since"] = record.last_modified
        attempts = self.http.retries + 1
        for attempt in range(1, attempts + 1):
            self._count(requests=1)
            quick = self._revalidate(url, conditional) if conditional else None
            if quick is not None:
                got, data = quick
            else:
                body = io.BytesIO()  # parsed whole anyway; stored only once `parse` accepts it
                got = download(
                    self._session_for(url), url, body, self.http,
                    conditional=conditional or None, max_size=self.max_response_bytes,
                )
                data = body.getvalue()
                del body
            if got.not_modified and cached is not None:
                self._count(cache_hits=1, not_modified=1)
                return parse(cached, url)
            self._count(bytes_fetched=got.transferred, cache_misses=1)
            try:
                result = parse(data, url)
            except FormatError as exc:
                # A body that ended early with no Content-Length to tell looks malformed:
                # fetched again (whole and malformed stays malformed: bounded retries).
                if _has_length(got.headers):
                    raise
                if attempt == attempts:
                    raise FormatError(f"{exc} (each of {attempts} downloads, none with a "
                                      "Content-Length)") from None
                log.info("%s: %s; fetching again", url, exc)
                time.sleep(self.http.backoff * (2 ** (attempt - 1)))
                conditional = {}
                continue
            break
        self.cache.put_blob(data, got.digest)  # re-hashed: refused if not what was downloaded
        self.cache.store_index_record(
            IndexRecord(url=url, sha256=got.digest, size=got.size, etag=got.etag,
                        last_modified=got.last_modified)
        )
        return result

    def _cached_url(
        self, url: str, what: str
    ) -> tuple[IndexRecord | None, bytes | None]:
        """The cached record and bytes for `url`; a damaged entry counts as absent online
        and is an error offline (naming the entry)."""
        try:
            record = self.cache.load_index_record(url)
            if record is None:
                return None, None
            try:
                return record, self.cache.read_blob(record.sha256)
            except BlobNotFound as missing:  # the record (or the blob) was damaged: name both
                raise CorruptEntry(self.cache.index_record_path(url),
                                   f"names blob {missing.path}, which is missing") from None
        except CorruptEntry as exc:
            self._count(corrupt_entries=1)
            if self.offline:
                raise FetchError(
                    f"offline: cached {what} for {url} is corrupt ({exc}) and cannot be refetched"
                ) from None
            log.warning("cache: %s for %s is corrupt (%s); fetching again", what, url, exc)
            return None, None

    # -- packages ------------------------------------------------------------------------

    def fetch_package(
        self,
        repo: Repository,
        pkg: Package,
        arch: str,
        verify: Callable[[Path], None],
    ) -> Path:
        """A path to `pkg`'s verified `.apk`. `verify(path)` raises VerificationError or
        FormatError when the file does not match the index record.

        Local repositories: the file in place. Remote: the cache entry keyed by `C:` if it
        verifies, else (with a content store) the store's copy if it verifies, else a
        download (streamed to a temp file, verified, then atomically put in place; then
        pushed to the content store). Offline, an entry that is missing or corrupt (and not
        in the content store) is a FetchError naming it.
        """
        url = repo.package_url(pkg, arch)
        if not repo.is_remote:
            path = repo.local_path / arch / pkg.filename
            if not path.is_file():
                raise FetchError(f"{pkg}: {path} does not exist (repository {repo.url})")
            verify(path)
            self._count(bytes_read=path.stat().st_size)
            self.progress.package_done(pkg.size)
            return path

        if not pkg.checksum:
            raise VerificationError(f"{pkg}: index record from {repo.url} has no C: checksum")
        dest = self.cache.package_path(pkg.checksum, f"{pkg} ({repo.url})")
        corrupt = ""
        if dest.is_file():
            try:
                verify(dest)
            except (VerificationError, FormatError) as exc:
                self._count(corrupt_entries=1)
                corrupt = str(exc)
                if not self.offline:
                    log.warning("cache: %s at %s is corrupt (%s); fetching again",
                                pkg, dest, exc)
            else:
                self._count(cache_hits=1)
                self.progress.package_done(pkg.size)
                return dest
        if self.offline:
            # The content store is a tier of the cache; the repository is out of reach.
            if self.content_store and self._pull_package(url, pkg, dest, verify):
                return dest
            nor = f" nor in the content store {self.content_store}" if self.content_store \
                else ""
            if corrupt:
                raise FetchError(f"offline: cached {pkg} at {dest} is corrupt ({corrupt}) and "
                                 f"cannot be fetched again from {url}{nor}")
            raise FetchError(f"offline: {pkg} is not in the cache ({dest}){nor}; "
                             f"would fetch {url}")
        if not self.content_store:
            self._download_package(url, pkg, dest, verify)
            return dest
        return self._shared_package(url, pkg, arch, dest, verify)

    def _shared_package(self, url: str, pkg: Package, arch: str, dest: Path,
                        verify: Callable[[Path], None]) -> Path:
        """`pkg` from the content store, else downloaded (under the package's claim, when
        one is installed) and pushed there."""
        from builder.oci import content_store as cs

        chex = dest.parent.name  # the hex SHA-1 of `C:`: the package's tag and claim
        if self._pull_package(url, pkg, dest, verify):
            return dest
        claim = _package_claim
        with claim(chex) if claim is not None else nullcontext(True):
            # the claim's last holder may have stored it meanwhile
            if claim is not None and self._pull_package(url, pkg, dest, verify):
                return dest
            digest, size = self._download_package(url, pkg, dest, verify)
            self._package_store().put_package(chex, dest, f"sha256:{digest}", size, {
                cs.ANNOTATION_CHECKSUM: pkg.checksum,
                cs.ANNOTATION_PACKAGE: f"{pkg.name}-{pkg.version}", cs.ANNOTATION_ARCH: arch})
            self._count(store_pushes=1)
        return dest

    def _pull_package(self, url: str, pkg: Package, dest: Path,
                      verify: Callable[[Path], None]) -> bool:
        """True when the content store's copy of `pkg` passed `verify` (the download's own
        checks) and is now the cache entry `dest`. False when the store has none, or has one
        that fails a check: the manifest's size against the index's `S:`, the blob against
        its digest, `verify` (a warning: the package is then downloaded). Registry faults
        raise RegistryError."""
        store = self._package_store()
        try:
            found = store.find_package(dest.parent.name)
            if found is None:
                return False
            if pkg.size and found.size != pkg.size:
                raise CorruptEntry(found.where, f"its blob is {found.size} bytes, the index "
                                                f"says S:{pkg.size}")
            if self.max_response_bytes is not None and found.size > self.max_response_bytes:
                raise CorruptEntry(found.where, f"its blob is {found.size} bytes, more than "
                                                f"{self.max_response_bytes}")
            with self.cache.atomic(dest.parent) as tmp:
                try:
                    store.fetch_blob(found.digest, tmp.file, found.size)
                    tmp.file.flush()
                    verify(tmp.path)
                except (VerificationError, FormatError) as exc:
                    # name the blob, not the temp file (never kept)
                    raise CorruptEntry(f"{found.where}@{found.digest}", str(exc).replace(
                        str(tmp.path), "the stored blob")) from None
                tmp.commit(dest)
        except CorruptEntry as exc:  # BlobNotFound too: a manifest naming a missing blob
            self._count(store_refused=1)
            then = "not used" if self.offline else f"downloading it from {url}"
            log.warning("content store: %s refused (%s); %s", pkg, exc, then)
            return False
        self._count(store_hits=1, store_bytes=found.size)
        self.progress.downloaded(found.size)
        self.progress.package_done(pkg.size)
        return True

    def refetch_package(self, repo: Repository, pkg: Package, arch: str,
                        verify: Callable[[Path], None], why: str) -> Path:
        """`fetch_package` of a package whose cached copy passed `verify` but failed a later
        check (`why`, e.g. a lockfile's signature section): downloaded again over it, or,
        offline, a FetchError naming the cached file."""
        url = repo.package_url(pkg, arch)
        dest = self.cache.package_path(pkg.checksum, f"{pkg} ({repo.url})")
        self._count(corrupt_entries=1)
        if self.offline:
            raise FetchError(f"offline: cached {pkg} at {dest} is corrupt ({why}) and cannot be "
                             f"fetched again from {url}")
        log.warning("cache: %s at %s is corrupt (%s); fetching again", pkg, dest, why)
        self._download_package(url, pkg, dest, verify)
        return dest

    def _download_package(self, url: str, pkg: Package, dest: Path,
                          verify: Callable[[Path], None]) -> tuple[str, int]:
        """Download `pkg` from `url`, verify it and commit it to `dest`; the hex SHA-256 and
        size of the file."""
        session = self._session_for(url)
        attempts = self.http.retries + 1
        for attempt in range(1, attempts + 1):
            with self.cache.atomic(dest.parent) as tmp:
                self._count(requests=1)
                out = tmp.file if self.progress is NULL else _Counted(tmp.file, self.progress)
                got = download(session, url, out, self.http, max_size=self.max_response_bytes)
                self._count(bytes_fetched=got.transferred, cache_misses=1)
                if pkg.size and got.size < pkg.size and not _has_length(got.headers):
                    # A body cut short without a Content-Length to tell: fetched again.
                    if attempt == attempts:
                        raise FetchError(f"{url}: download failed after {attempts} attempts: "
                                         f"got {got.size} of the index's S:{pkg.size} bytes")
                    log.info("%s: got %d of the index's S:%d bytes; fetching again",
                             url, got.size, pkg.size)
                    time.sleep(self.http.backoff * (2 ** (attempt - 1)))
                    continue
                tmp.file.flush()
                try:
                    verify(tmp.path)
                except (VerificationError, FormatError) as exc:
                    # Name what the user can act on: the URL, not the temp file (never kept).
                    why = str(exc).replace(str(tmp.path), "the download")
                    kind = VerificationError if isinstance(exc, VerificationError) \
                        else FormatError
                    raise kind(f"{url}: {why}") from None
                tmp.commit(dest)
            break
        self.progress.package_done(pkg.size)
        return got.digest, got.size


def _has_length(headers: dict[str, str]) -> bool:
    return any(k.lower() == "content-length" for k in headers)


class _Counted:
    """A download's file, telling the status line how many bytes arrived."""

    def __init__(self, file: BinaryIO, progress: NullProgress) -> None:
        self.file, self.progress = file, progress

    def write(self, data: bytes | bytearray) -> int:
        self.progress.downloaded(len(data))
        return self.file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        return self.file.truncate(size)
