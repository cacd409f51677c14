"""HTTP for repositories: one pooled `requests.Session` per build, retries, streamed downloads.

- Connection reuse: one Session, an `HTTPAdapter` whose pool holds `pool_size` connections
  per host (size it for the fetch concurrency, or connections get thrown away).
- Retries: urllib3 `Retry` on connection errors and 5xx/429 with exponential backoff
  (`backoff * 2**(n-1)`); a response body that breaks mid-stream is retried by
  `download()` itself, since urllib3 only retries up to the response headers: resumed
  with a `Range` request where the server offers ranges (only the missing bytes cross the
  network again), else from the start.
- TLS: `ca_file` names a PEM bundle to trust instead of the system store (self-signed
  test servers, private mirrors).
- Downloads stream into a file object while hashing (SHA-256 by default), so a package is
  never held in memory whole and its hash is known when the last byte lands.
- Revalidation: a conditional GET of a cached index goes first through `revalidate()`, one
  request on the standard library's http.client (the same TLS trust: `ca_file`, else
  certifi's bundle as requests uses; no proxies, as the session has none). It answers a 304
  or a whole 200 body; anything else — an error, a redirect, a 5xx — is left to the
  session's retrying path. So a hot build, whose indexes are unchanged and whose packages
  are cached, never imports requests (~50 ms with urllib3).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from builder.errors import FetchError

if TYPE_CHECKING:
    import requests

# `requests` (with urllib3, ~50 ms to import) is imported by the functions that talk HTTP,
# so builds from local repositories or a warm cache never load it.

RETRY_STATUSES = (429, 500, 502, 503, 504)
CHUNK = 256 * 1024
USER_AGENT = "apkimage/0.1"


# Environment overrides of the defaults below (for slow links, and for tests that must fail
# fast): seconds per connect and per read, extra attempts, first backoff in seconds.
TIMEOUT_ENV = "APKIMAGE_HTTP_TIMEOUT"
RETRIES_ENV = "APKIMAGE_HTTP_RETRIES"
BACKOFF_ENV = "APKIMAGE_HTTP_BACKOFF"


@dataclass(frozen=True)
class HttpOptions:
    """Knobs for the session; the defaults suit a real build, tests shrink them."""

    timeout: float = 30.0  # seconds, per connect and per read
    retries: int = 3  # extra attempts after the first
    backoff: float = 0.5  # first retry waits this long, then doubles
    pool_size: int = 8
    ca_file: str | None = None

    @classmethod
    def configured(cls, timeout: float | None = None, retries: int | None = None,
                   backoff: float | None = None, **kw: Any) -> HttpOptions:
        """Options where each of timeout, retries and backoff not given comes from its
        environment variable (`APKIMAGE_HTTP_TIMEOUT`, `_RETRIES`, `_BACKOFF`), else the
        default; a malformed variable is a FetchError naming it."""
        if timeout is None:
            timeout = _env_number(TIMEOUT_ENV, cls.timeout, positive=True)
        if retries is None:
            retries = int(_env_number(RETRIES_ENV, cls.retries, integer=True))
        if backoff is None:
            backoff = _env_number(BACKOFF_ENV, cls.backoff)
        return cls(timeout=timeout, retries=retries, backoff=backoff, **kw)


def _env_number(name: str, default: float, *, integer: bool = False,
                positive: bool = False) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not (value > 0 if positive else value >= 0):
        raise FetchError(f"{name}={raw!r}: expected "
                         f"{'a whole number' if integer else 'a number of seconds'}"
                         f"{' above 0' if positive else ', 0 or more'}")
    return value


def make_session(options: HttpOptions) -> requests.Session:
    """A Session with a retrying, pooled adapter for http:// and https://."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=options.retries,
        connect=options.retries,
        read=options.retries,
        status=options.retries,
        other=0,
        backoff_factor=options.backoff,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        raise_on_status=False,  # hand back the last 5xx so the error names its status
        respect_retry_after_header=False,
    )
    adapter = HTTPAdapter(
        max_retries=retry, pool_connections=options.pool_size, pool_maxsize=options.pool_size
    )
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.verify = options.ca_file if options.ca_file else True
    session.trust_env = False  # no proxies from the environment: builds are reproducible
    return session


@dataclass
class Download:
    """What `download()` got: status, validators, size and the hex digest of the body."""

    url: str
    status: int
    size: int = 0
    digest: str = ""  # hex, of the algorithm requested
    etag: str = ""
    last_modified: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    transferred: int = 0  # body bytes received (more than `size` after a restarted body)

    @property
    def not_modified(self) -> bool:
        return self.status == 304


class DownloadFile(Protocol):
    """Where `download()` streams a body: a binary file, or a wrapper with its write, seek
    and truncate."""

    def write(self, data: bytes | bytearray, /) -> object: ...

    def seek(self, offset: int, whence: int = 0, /) -> object: ...

    def truncate(self, size: int | None = None, /) -> object: ...


def download(
    session: requests.Session,
    url: str,
    out: DownloadFile,
    options: HttpOptions,
    *,
    algorithm: str = "sha256",
    conditional: dict[str, str] | None = None,
    max_size: int | None = None,
) -> Download:
    """GET `url`, streaming the body into `out` while hashing it with `algorithm`.

    `conditional` carries `If-None-Match`/`If-Modified-Since`; a 304 returns with nothing
    written. Any other non-200 status, a connection failure after the retries, or a body
    larger than `max_size` raises FetchError naming the URL. A body cut short is retried up
    to `options.retries` times: resumed where it broke (`Range: bytes=N-`, with `If-Range`
    naming the first response's validator, so a changed file comes whole) when the server
    offered ranges, else from the start (`out` truncated first).
    """
    attempts = options.retries + 1
    got = _Partial(hashlib.new(algorithm))
    for attempt in range(1, attempts + 1):
        if not got.resumable():
            out.seek(0)
            out.truncate()
            got.restart()
        try:
            return _download_once(session, url, out, options, got, conditional, max_size)
        except _BodyBroken as exc:
            if attempt == attempts:
                raise FetchError(
                    f"{url}: download failed after {attempts} attempts: "
                    f"{_broken(exc, got, options)}") from exc
            time.sleep(options.backoff * (2 ** (attempt - 1)))
    raise AssertionError("unreachable")


class _BodyBroken(Exception):
    """The connection broke while the body was streaming (retryable)."""


@dataclass
class _Partial:
    """A download across attempts: the bytes written so far, their running hash, and what a
    resumed request must send."""

    hasher: Any
    algorithm: str = ""
    size: int = 0  # bytes in `out` so far
    total: int | None = None  # the whole body's length, when the server said
    validator: str = ""  # strong ETag or Last-Modified of the first response
    ranges: bool = False  # the server answered `Accept-Ranges: bytes`
    transferred: int = 0  # body bytes received over all attempts

    def __post_init__(self) -> None:
        self.algorithm = self.hasher.name

    def resumable(self) -> bool:
        return self.size > 0 and self.ranges and bool(self.validator)

    def restart(self) -> None:
        self.hasher = hashlib.new(self.algorithm)
        self.size, self.total, self.validator, self.ranges = 0, None, "", False


def _validator(headers: Any) -> str:
    etag = headers.get("ETag", "")
    if etag and not etag.startswith("W/"):  # If-Range takes only a strong validator
        return etag
    return headers.get("Last-Modified", "")


def _download_once(
    session: requests.Session,
    url: str,
    out: DownloadFile,
    options: HttpOptions,
    got: _Partial,
    conditional: dict[str, str] | None,
    max_size: int | None,
) -> Download:
    import requests

    headers = dict(conditional or {})
    resuming = got.resumable()
    if resuming:
        headers.update({"Range": f"bytes={got.size}-", "If-Range": got.validator})
    try:
        resp = session.get(url, stream=True, timeout=options.timeout, headers=headers)
    except requests.exceptions.SSLError as exc:
        raise FetchError(f"{url}: TLS error: {_reason(exc)}") from exc
    except requests.exceptions.RequestException as exc:
        if _timed_out(exc):
            raise FetchError(f"{url}: no answer within {options.timeout:g} s "
                             f"({options.retries + 1} attempts)") from exc
        raise FetchError(f"{url}: cannot connect: {_reason(exc)}") from exc
    with resp:
        result = Download(
            url=url,
            status=resp.status_code,
            etag=resp.headers.get("ETag", ""),
            last_modified=resp.headers.get("Last-Modified", ""),
            headers=dict(resp.headers),
        )
        if resp.status_code == 304 and conditional:
            return result
        if resuming and resp.status_code == 206:
            if not _continues(resp.headers.get("Content-Range", ""), got):
                got.ranges = False  # a range we did not ask for: next attempt from the start
                try:
                    raise OSError(f"asked for bytes {got.size}-, got "
                                  f"{resp.headers.get('Content-Range', 'no Content-Range')}")
                except OSError as exc:
                    raise _BodyBroken(str(exc)) from exc
            result.status = 200
        elif resp.status_code == 200:
            if got.size:  # the server sent the whole body again (changed, or no ranges)
                out.seek(0)
                out.truncate()
                got.restart()
            got.validator = _validator(resp.headers)
            got.ranges = resp.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
            length = resp.headers.get("Content-Length")
            got.total = int(length) if length is not None and length.isdigit() else None
        else:
            tries = f" ({options.retries + 1} attempts)" \
                if resp.status_code in RETRY_STATUSES else ""
            raise FetchError(f"{url}: HTTP {resp.status_code} {resp.reason}{tries}")
        from urllib3.exceptions import ProtocolError, ReadTimeoutError

        def take(data: bytearray) -> None:
            if max_size is not None and got.size + len(data) > max_size:
                raise FetchError(f"{url}: response larger than {max_size} bytes")
            got.hasher.update(data)
            out.write(data)
            got.size += len(data)

        # read1 returns what has arrived, so a body that breaks loses only the bytes still in
        # flight and a resumed request asks for no more; it is gathered into CHUNKs to keep
        # the hashing and writing in big pieces.
        pending = bytearray()
        try:
            while chunk := resp.raw.read1(CHUNK, decode_content=True):
                got.transferred += len(chunk)
                pending += chunk
                if len(pending) >= CHUNK:
                    take(pending)
                    pending = bytearray()
        except (ProtocolError, ReadTimeoutError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ConnectionError) as exc:
            take(pending)
            raise _BodyBroken(str(exc)) from exc
        take(pending)
        if got.total is not None and got.total != got.size:
            try:
                raise OSError(f"got {got.size} of {got.total} bytes")
            except OSError as exc:
                raise _BodyBroken(str(exc)) from exc
        result.size = got.size
        result.transferred = got.transferred
        result.digest = got.hasher.hexdigest()
        return result


def _continues(content_range: str, got: _Partial) -> bool:
    """A 206's `Content-Range: bytes N-M/T` continues exactly where `got` stopped."""
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range.strip())
    if not m or int(m.group(1)) != got.size:
        return False
    total = None if m.group(3) == "*" else int(m.group(3))
    return total is None or got.total is None or total == got.total


def revalidate(url: str, conditional: dict[str, str], options: HttpOptions,
               max_size: int | None = None) -> tuple[Download, bytes] | None:
    """One conditional GET of `url` with http.client: (the result, the body) for a 304
    (empty body) or a complete 200; None when the session's path must do it instead."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.username or parts.password \
            or not parts.hostname:
        return None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    conn: http.client.HTTPConnection
    try:
        if parts.scheme == "https":
            import ssl

            cafile = options.ca_file
            if not cafile:
                import certifi  # requests' own trust store

                cafile = certifi.where()
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=options.timeout,
                                               context=ssl.create_default_context(cafile=cafile))
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=options.timeout)
        try:
            conn.request("GET", target, headers={**conditional, "User-Agent": USER_AGENT,
                                                 "Accept-Encoding": "identity"})
            resp = conn.getresponse()
            result = Download(url=url, status=resp.status, etag=resp.getheader("ETag", ""),
                              last_modified=resp.getheader("Last-Modified", ""),
                              headers=dict(resp.getheaders()))
            if resp.status == 304:
                resp.read()
                return result, b""
            if resp.status != 200:
                return None
            limit = None if max_size is None else max_size + 1
            body = resp.read(limit) if limit is not None else resp.read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError):
        return None  # let the retrying path try, and report what is wrong
    if max_size is not None and len(body) > max_size:
        raise FetchError(f"{url}: response larger than {max_size} bytes")
    expected = result.headers.get("Content-Length")
    if expected is not None and expected.isdigit() and int(expected) != len(body):
        return None
    result.size = result.transferred = len(body)
    result.digest = hashlib.sha256(body).hexdigest()
    return result, body


def _timed_out(exc: BaseException) -> bool:
    """Whether a requests/urllib3 exception (chain) is a connect or read timeout."""
    import requests
    from urllib3.exceptions import NewConnectionError
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    seen: BaseException | None = exc
    for _ in range(8):  # requests wraps urllib3's MaxRetryError, whose reason is the cause
        if seen is None or isinstance(seen, NewConnectionError):  # (a "timeout" subclass)
            return False
        if isinstance(seen, requests.exceptions.Timeout | Urllib3Timeout):
            return True
        inner = getattr(seen, "reason", None)
        if not isinstance(inner, BaseException):
            args = [a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)]
            inner = args[0] if args else seen.__cause__
        seen = inner
    return False


def _broken(exc: _BodyBroken, got: _Partial, options: HttpOptions) -> str:
    """What went wrong with a body that broke off, on one line."""
    where = f"the body broke off after {got.size}"
    where += f" of {got.total} bytes" if got.total is not None else " bytes"
    cause = exc.__cause__
    if cause is not None and _timed_out(cause):
        return f"{where} (no data for {options.timeout:g} s)"
    return where


def _reason(exc: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 exception chain, on one line."""
    inner: BaseException = exc
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, BaseException):
            inner = arg
    reason = getattr(inner, "reason", None)
    text = str(reason if reason is not None else inner)
    return " ".join(text.split())
