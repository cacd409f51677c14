"""A download whose body breaks resumes where it broke (`Range: bytes=N-` + `If-Range`) when
the server offers ranges, and starts again when it does not or when the file changed: the
bytes crossing the network, the requests sent and the result, checked against real servers."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.repo.http import HttpOptions, _continues, _Partial, download, make_session
from perf.serve import RepoServer as ShapedServer

OPTS = HttpOptions(timeout=10, retries=3, backoff=0.01)
BODY = bytes(range(256)) * 4096  # 1 MiB


def _get(url: str) -> tuple[bytes, int, str]:
    out = io.BytesIO()
    with make_session(OPTS) as session:
        got = download(session, url, out, OPTS)
    return out.getvalue(), got.transferred, got.digest


def test_a_cut_body_resumes_with_a_range(tmp_path: Path) -> None:
    (tmp_path / "big.apk").write_bytes(BODY)
    with ShapedServer(tmp_path, cut=0.4) as srv:
        data, transferred, digest = _get(srv.url + "/big.apk")
        log = srv.requests()
    assert data == BODY and digest == hashlib.sha256(BODY).hexdigest()
    assert transferred == len(BODY)  # nothing crossed the network twice
    first, second = log
    assert (first["status"], first["bytes"], first["range"]) == (200, int(len(BODY) * 0.4), None)
    assert (second["status"], second["range"]) == (206, f"bytes={int(len(BODY) * 0.4)}-")
    assert second["bytes"] == len(BODY) - first["bytes"]


class _Flaky(http.server.BaseHTTPRequestHandler):
    """First answer: ETag "v1", half the promised body, hang up. Then `server.then`:
    "no-ranges" (no Accept-Ranges was offered, so a whole 200 is expected), "changed" (the
    If-Range validator no longer matches: a whole 200 of new content), or "bad-range" (a
    206 from the wrong offset)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        srv.seen.append(dict(self.headers))  # type: ignore[attr-defined]
        then = srv.then  # type: ignore[attr-defined]
        n = len(srv.seen)  # type: ignore[attr-defined]
        if n == 1:
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.send_header("ETag", '"v1"')
            if then != "no-ranges":
                self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            self.wfile.write(BODY[: len(BODY) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        body = BODY if then != "changed" else BODY[::-1]
        if then == "bad-range" and n == 2:
            part = body[100:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 100-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            self.wfile.write(part)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v2"' if then == "changed" else '"v1"')
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def flaky() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    srv.daemon_threads = True
    srv.seen = []  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("then, expected, requests", [
    ("no-ranges", BODY, 2),
    ("changed", BODY[::-1], 2),
    ("bad-range", BODY, 3),
])
def test_no_ranges_a_changed_file_or_a_wrong_range_start_again(
        flaky: http.server.ThreadingHTTPServer, then: str, expected: bytes,
        requests: int) -> None:
    flaky.then = then  # type: ignore[attr-defined]
    data, transferred, digest = _get(f"http://127.0.0.1:{flaky.server_address[1]}/p.apk")
    assert data == expected and digest == hashlib.sha256(expected).hexdigest()
    seen = flaky.seen  # type: ignore[attr-defined]
    assert len(seen) == requests
    if then == "no-ranges":
        assert "Range" not in seen[1]
    else:
        assert (seen[1]["Range"], seen[1]["If-Range"]) == (f"bytes={len(BODY) // 2}-", '"v1"')
    assert transferred > len(BODY)  # the half that came first was thrown away


def test_content_range_must_continue_the_download() -> None:
    got = _Partial(hashlib.sha256(), size=10, total=30)
    assert _continues("bytes 10-29/30", got) and _continues("bytes 10-29/*", got)
    assert not _continues("bytes 0-29/30", got) and not _continues("bytes 10-29/31", got)
    assert not _continues("", got)
