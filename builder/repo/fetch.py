"""Getting bytes from repositories: the `Fetcher` (cache + HTTP + offline guard + counters).
The `fetch` stage's implementations over it are in builder/repo/fetch_packages.py.

The Fetcher is the only place that talks to the network. In offline mode it never creates
an HTTP session: every path that would need one goes through `_session_for()` or, for an
index's conditional GET on the standard library, `_revalidate()`, both of which raise
`FetchError("offline: would fetch <url>")` instead — so "offline opens no socket" holds by
construction, not by each caller remembering to check.

Fetched content is handed to a caller-supplied check (`parse` for indexes, `verify` for
packages) *before* the cache advertises it, so an entry in the cache has passed that check
at least once; reads re-run the check and refetch (or, offline, fail naming the entry).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from builder.apk.model import Package
from builder.errors import FetchError, FormatError, VerificationError
from builder.progress import NULL, NullProgress
from builder.repo.cache import Cache, CorruptEntry, IndexRecord
from builder.repo.http import Download, HttpOptions, download, make_session, revalidate
from builder.repo.repository import INDEX_FILENAME, Repository
from builder.repo.store import BlobNotFound

if TYPE_CHECKING:
    import requests


log = logging.getLogger(__name__)
T = TypeVar("T")


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
    ) -> None:
        self.cache = cache if cache is not None else Cache(cache_dir)
        self.offline = offline
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
        verifies, else a download (streamed to a temp file, verified, then atomically put in
        place). Offline, a missing or corrupt entry is a FetchError naming it.
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
        if dest.is_file():
            try:
                verify(dest)
            except (VerificationError, FormatError) as exc:
                self._count(corrupt_entries=1)
                if self.offline:
                    raise FetchError(
                        f"offline: cached {pkg} at {dest} is corrupt ({exc}) and cannot be "
                        f"fetched again from {url}"
                    ) from None
                log.warning("cache: %s at %s is corrupt (%s); fetching again", pkg, dest, exc)
            else:
                self._count(cache_hits=1)
                self.progress.package_done(pkg.size)
                return dest
        elif self.offline:
            raise FetchError(f"offline: {pkg} is not in the cache ({dest}); would fetch {url}")
        return self._download_package(url, pkg, dest, verify)

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
        return self._download_package(url, pkg, dest, verify)

    def _download_package(self, url: str, pkg: Package, dest: Path,
                          verify: Callable[[Path], None]) -> Path:
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
        return dest


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
