"""A local package repository server for benchmarks and tests.

Serves a directory on 127.0.0.1 over HTTP/1.1 (keep-alive, threaded) or HTTPS with a
generated throw-away CA, with strong ETags (SHA-256 of the content, so a regenerated but
identical corpus keeps its ETags), `If-None-Match` → 304, single `Range` → 206, optional
per-request latency and per-connection bandwidth shaping (to make `cold` runs look like a
real network), a flaky-link fault (`cut`: the first whole-body answer for each file promises
the whole body, sends that fraction of it and hangs up), and a JSON-lines request log. The
harness reads the log to prove that an `offline` build sent nothing.

    with RepoServer(repo_dir, latency_ms=20) as srv:
        build(srv.url)
        assert all(r["status"] == 200 for r in srv.requests())
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from builder.errors import ApkImageError

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 64 * 1024


class ServeError(ApkImageError):
    """The repository server could not start (bad directory, port, certificate)."""


def generate_tls_files(out_dir: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """Write a throw-away CA (`ca.pem`) and a server certificate signed by it
    (`server.pem`, `server.key`) for `host` and `localhost`. Returns the three paths.

    Clients trust the server by trusting `ca.pem` (`requests.get(url, verify=ca)`,
    `apkimage build --ca-file ca.pem`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apkperf throw-away CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path = out_dir / "ca.pem"
    cert_path = out_dir / "server.pem"
    key_path = out_dir / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(pem))
    cert_path.write_bytes(cert.public_bytes(pem))
    key_path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return ca_path, cert_path, key_path


class _ETagCache:
    """SHA-256 ETags keyed by (path, size, mtime_ns, inode), computed once per file version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tags: dict[tuple[str, int, int, int], str] = {}

    def get(self, path: Path, st: os.stat_result) -> str:
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            tag = self._tags.get(key)
        if tag is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            tag = f'"{h.hexdigest()[:32]}"'
            with self._lock:
                self._tags[key] = tag
        return tag


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass  # the JSON log replaces stderr chatter

    # One handler instance serves one connection: the bandwidth budget lives here. It is
    # reset at every response so idle keep-alive time does not become a burst allowance.
    def setup(self) -> None:
        super().setup()
        self._conn_start = time.monotonic()
        self._conn_bytes = 0

    def do_GET(self) -> None:
        with self.server.owner.in_flight():
            self._serve(head=False)

    def do_HEAD(self) -> None:
        with self.server.owner.in_flight():
            self._serve(head=True)

    def _reply_empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.record(self, status, 0)

    def _resolve(self) -> Path | None:
        raw = unquote(urlsplit(self.path).path)
        rel = raw.lstrip("/")
        if "\0" in rel:
            return None
        root = self.server.root
        target = (root / rel).resolve()
        if target != root and root not in target.parents:
            return None
        return target

    def _serve(self, head: bool) -> None:
        srv = self.server
        if srv.latency_s:
            time.sleep(srv.latency_s)
        target = self._resolve()
        if target is None or not target.is_file():
            self._reply_empty(HTTPStatus.NOT_FOUND)
            return
        st = target.stat()
        etag = srv.etags.get(target, st)
        size = st.st_size
        common = {"ETag": etag, "Accept-Ranges": "bytes",
                  "Last-Modified": self.date_time_string(int(st.st_mtime)),
                  "Content-Type": "application/octet-stream"}
        inm = self.headers.get("If-None-Match")
        if inm is not None and (inm.strip() == "*" or etag in [t.strip() for t in
                                                              inm.split(",")]):
            self._reply_empty(HTTPStatus.NOT_MODIFIED, {"ETag": etag})
            return

        start, end, status = 0, size - 1, HTTPStatus.OK
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if range_header and (if_range is None or if_range.strip() == etag):
            m = _RANGE_RE.match(range_header.strip())
            if m:  # multi-range requests are answered with the whole file (allowed)
                first, last = m.groups()
                if first == "" and last == "":
                    m = None
                elif first == "":
                    start, end = max(0, size - int(last)), size - 1
                else:
                    start = int(first)
                    end = min(int(last), size - 1) if last else size - 1
                if m is not None:
                    if start >= size or start > end:
                        self._reply_empty(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                                          {"Content-Range": f"bytes */{size}"})
                        return
                    status = HTTPStatus.PARTIAL_CONTENT
        length = end - start + 1 if size else 0
        send = length
        if srv.owner.cut and status == HTTPStatus.OK and not head \
                and srv.owner.cut_first(str(target)):
            send = int(length * srv.owner.cut)
        self.send_response(status)
        for k, v in common.items():
            self.send_header(k, v)
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        sent = 0
        self._conn_start, self._conn_bytes = time.monotonic(), 0
        if not head and length:
            with open(target, "rb") as f:
                f.seek(start)
                remaining = send
                while remaining:
                    chunk = f.read(min(_CHUNK, remaining))
                    if not chunk:
                        break
                    self._shape(len(chunk))
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True
                        break
                    sent += len(chunk)
                    remaining -= len(chunk)
        if send < length:  # the `cut` fault: the promised body stops here
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
        srv.record(self, status, sent)

    def _shape(self, nbytes: int) -> None:
        """Sleep so this connection never runs ahead of the configured bandwidth."""
        rate = self.server.bytes_per_s
        if not rate:
            return
        self._conn_bytes += nbytes
        due = self._conn_start + self._conn_bytes / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: RepoServer) -> None:
        self.root = owner.root
        self.latency_s = owner.latency_ms / 1000.0
        self.bytes_per_s = owner.bandwidth_mbit * 1e6 / 8 if owner.bandwidth_mbit else 0.0
        self.etags = _ETagCache()
        self.owner = owner
        super().__init__(("127.0.0.1", owner.requested_port), _Handler)

    def record(self, handler: _Handler, status: int, nbytes: int) -> None:
        self.owner._record({
            "time": round(time.time(), 6),
            "method": handler.command,
            "path": urlsplit(handler.path).path,
            "status": int(status),
            "bytes": nbytes,
            "range": handler.headers.get("Range"),
            "client_port": handler.client_address[1],
        })


class RepoServer:
    """Serve `root` on 127.0.0.1. Use as a context manager, or `start()`/`stop()`.

    `url` is the base URL (no trailing slash). With `tls=True` a CA and server certificate
    are generated into `tls_dir` (default: next to `log_path`, else a temp dir) and
    `ca_path` names the CA PEM clients must trust."""

    def __init__(self, root: str | os.PathLike[str], port: int = 0, tls: bool = False,
                 latency_ms: float = 0.0, bandwidth_mbit: float = 0.0, cut: float = 0.0,
                 log_path: str | os.PathLike[str] | None = None,
                 tls_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ServeError(f"{root}: not a directory, nothing to serve")
        if latency_ms < 0 or bandwidth_mbit < 0:
            raise ServeError("latency and bandwidth must not be negative")
        if not 0 <= cut < 1:
            raise ServeError("cut must be a fraction in [0, 1)")
        self.cut = cut
        self._cut_done: set[str] = set()
        self.requested_port = port
        self.tls = tls
        self.latency_ms = latency_ms
        self.bandwidth_mbit = bandwidth_mbit
        self.log_path = Path(log_path) if log_path else None
        self._tls_dir = Path(tls_dir) if tls_dir else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_path: Path | None = None
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Requests being answered: the client may see a response before it is logged, so
        # `requests()` waits for these to finish.
        self._busy = threading.Condition(self._lock)
        self._in_flight = 0
        self._log: list[dict[str, Any]] = []
        self._log_file: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> RepoServer:
        try:
            httpd = _Server(self)
        except OSError as exc:
            raise ServeError(f"cannot listen on 127.0.0.1:{self.requested_port}: {exc}") from exc
        if self.tls:
            tls_dir = self._tls_dir
            if tls_dir is None and self.log_path is not None:
                tls_dir = self.log_path.parent
            if tls_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="apkperf-tls-")
                tls_dir = Path(self._tmp.name)
            ca, cert, key = generate_tls_files(tls_dir)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            # Handshake lazily in the per-connection thread, not in the accept loop.
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True,
                                           do_handshake_on_connect=False)
            self.ca_path = ca
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="repo-server",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RepoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ accessors
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise ServeError("server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._busy.notify_all()

    def requests(self, settle_s: float = 5.0) -> list[dict[str, Any]]:
        """Every request answered so far (oldest first), as logged — after waiting (at most
        `settle_s`) for requests still being answered to be logged."""
        with self._lock:
            self._busy.wait_for(lambda: self._in_flight == 0, timeout=settle_s)
            return list(self._log)

    def cut_first(self, path: str) -> bool:
        """True the first time `path` is served whole (the `cut` fault applies then)."""
        with self._lock:
            if path in self._cut_done:
                return False
            self._cut_done.add(path)
            return True

    def clear_requests(self) -> None:
        """Forget the in-memory log (the log file keeps everything)."""
        with self._lock:
            self._log.clear()

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(entry)
            if self._log_file is not None:
                self._log_file.write(json.dumps(entry, sort_keys=True) + "\n")
                self._log_file.flush()


def read_request_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parse a JSON-lines request log written by `RepoServer(log_path=...)`."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ServeError(f"{p}:{lineno}: malformed request log line: {exc}") from None
    return out
