"""The benchmark repository server: ETag/304, Range, shaping, request log, TLS, CLI."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from perf.serve import RepoServer, ServeError, read_request_log
from perf.workloads import Workload
from tests.helpers import require_tool


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "x86_64").mkdir(parents=True)
    (root / "x86_64" / "APKINDEX.tar.gz").write_bytes(b"index-bytes" * 100)
    (root / "x86_64" / "big.apk").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    (tmp_path / "secret").write_text("outside")
    return root


def test_get_etag_304_and_log(repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "log" / "requests.jsonl"
    with RepoServer(repo, log_path=log) as srv:
        with requests.Session() as s:
            r = s.get(f"{srv.url}/x86_64/APKINDEX.tar.gz")
            assert r.status_code == 200
            assert r.content == b"index-bytes" * 100
            etag = r.headers["ETag"]
            assert etag.startswith('"') and etag.endswith('"')
            r2 = s.get(f"{srv.url}/x86_64/APKINDEX.tar.gz", headers={"If-None-Match": etag})
            assert r2.status_code == 304 and r2.content == b""
            r3 = s.get(f"{srv.url}/x86_64/APKINDEX.tar.gz",
                       headers={"If-None-Match": '"other"'})
            assert r3.status_code == 200
            assert s.get(f"{srv.url}/x86_64/missing.apk").status_code == 404
            assert s.get(f"{srv.url}/../secret").status_code == 404
            assert s.get(f"{srv.url}/%2e%2e/secret").status_code == 404
            assert s.head(f"{srv.url}/x86_64/big.apk").headers["Content-Length"] == str(1 << 20)
        logged = srv.requests()
    statuses = [(e["method"], e["path"], e["status"]) for e in logged]
    assert statuses[:4] == [
        ("GET", "/x86_64/APKINDEX.tar.gz", 200),
        ("GET", "/x86_64/APKINDEX.tar.gz", 304),
        ("GET", "/x86_64/APKINDEX.tar.gz", 200),
        ("GET", "/x86_64/missing.apk", 404),
    ]
    assert logged[0]["bytes"] == 1100 and logged[1]["bytes"] == 0
    assert logged[-1]["method"] == "HEAD" and logged[-1]["bytes"] == 0
    # The file log has the same entries, and a fresh server on the same log appends.
    assert read_request_log(log) == logged
    with RepoServer(repo, log_path=log) as srv:
        assert srv.requests() == []
    assert len(read_request_log(log)) == len(logged)


def test_etag_is_content_hash_and_changes_with_content(repo: Path) -> None:
    f = repo / "x86_64" / "APKINDEX.tar.gz"
    with RepoServer(repo) as srv:
        e1 = requests.get(f"{srv.url}/x86_64/APKINDEX.tar.gz").headers["ETag"]
        f.write_bytes(b"new content")
        os.utime(f, ns=(1, 1))
        e2 = requests.get(f"{srv.url}/x86_64/APKINDEX.tar.gz").headers["ETag"]
    assert e1 != e2
    assert e2.strip('"') == hashlib.sha256(b"new content").hexdigest()[:32]


def test_range_requests(repo: Path) -> None:
    data = (repo / "x86_64" / "big.apk").read_bytes()
    url_path = "/x86_64/big.apk"
    with RepoServer(repo) as srv, requests.Session() as s:
        url = srv.url + url_path
        r = s.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206
        assert r.content == data[10:20]
        assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        r = s.get(url, headers={"Range": "bytes=-5"})
        assert r.status_code == 206 and r.content == data[-5:]
        r = s.get(url, headers={"Range": f"bytes={len(data) - 3}-"})
        assert r.status_code == 206 and r.content == data[-3:]
        r = s.get(url, headers={"Range": f"bytes={len(data) - 3}-{len(data) + 100}"})
        assert r.status_code == 206 and r.content == data[-3:]
        r = s.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416
        assert r.headers["Content-Range"] == f"bytes */{len(data)}"
        # If-Range with a stale validator: the whole file.
        r = s.get(url, headers={"Range": "bytes=0-0", "If-Range": '"stale"'})
        assert r.status_code == 200 and r.content == data
        logged = srv.requests()
    assert logged[0]["range"] == "bytes=10-19" and logged[0]["bytes"] == 10


def test_keep_alive_reuses_one_connection(repo: Path) -> None:
    with RepoServer(repo) as srv, requests.Session() as s:
        for _ in range(5):
            assert s.get(f"{srv.url}/x86_64/APKINDEX.tar.gz").status_code == 200
        ports = {e["client_port"] for e in srv.requests()}
    assert len(ports) == 1


def test_latency_applied(repo: Path) -> None:
    with RepoServer(repo, latency_ms=150) as srv, requests.Session() as s:
        s.get(f"{srv.url}/x86_64/APKINDEX.tar.gz")  # connect outside the timing
        t0 = time.perf_counter()
        for _ in range(3):
            s.get(f"{srv.url}/x86_64/APKINDEX.tar.gz")
        elapsed = time.perf_counter() - t0
    assert elapsed >= 0.45


def test_bandwidth_roughly_applied(repo: Path) -> None:
    # 1 MiB at 16 Mbit/s (2 MB/s) takes ~0.52 s; unshaped it takes milliseconds.
    with RepoServer(repo, bandwidth_mbit=16) as srv:
        t0 = time.perf_counter()
        r = requests.get(f"{srv.url}/x86_64/big.apk")
        elapsed = time.perf_counter() - t0
    assert len(r.content) == 1 << 20
    assert 0.4 <= elapsed <= 3.0


def test_tls_with_generated_ca(repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "tls" / "requests.jsonl"
    with RepoServer(repo, tls=True, log_path=log) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        assert srv.ca_path == log.parent / "ca.pem"
        r = requests.get(f"{srv.url}/x86_64/APKINDEX.tar.gz", verify=str(srv.ca_path))
        assert r.status_code == 200 and r.content == b"index-bytes" * 100
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{srv.url}/x86_64/APKINDEX.tar.gz", verify=True)
        # localhost is in the certificate too.
        r = requests.get(f"https://localhost:{srv.port}/x86_64/APKINDEX.tar.gz",
                         verify=str(srv.ca_path))
        assert r.status_code == 200


def test_bad_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match="not a directory"):
        RepoServer(tmp_path / "nope")


def test_cli_prints_url_and_stops_on_sigterm(repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "cli.jsonl"
    # Only the serve subcommand is loaded, so the test does not depend on the other commands.
    runner = (
        "import argparse, sys\n"
        "from perf.commands import serve\n"
        "p = argparse.ArgumentParser()\n"
        "serve.add_parser(p.add_subparsers())\n"
        "a = p.parse_args(sys.argv[1:])\n"
        "sys.exit(a.func(a))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", runner, "serve", str(repo), "--log", str(log)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/x86_64/APKINDEX.tar.gz", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
    assert rc == 0
    assert [e["path"] for e in read_request_log(log)] == ["/x86_64/APKINDEX.tar.gz"]


@pytest.mark.tools
@pytest.mark.slow
def test_build_small_through_tls_server_and_unpack(tmp_path: Path,
                                                  small_workload: Workload) -> None:
    """The `small` workload builds through the HTTPS server, and umoci unpacks the image with
    the corpus' special cases resolved (replaces, symlinks, hard links)."""
    import json
    import shutil as sh

    import yaml

    require_tool("umoci")
    w = small_workload
    with RepoServer(w.repo_dir, tls=True, tls_dir=tmp_path / "tls") as srv:
        doc = yaml.safe_load(w.config_path.read_text())
        doc["contents"]["repositories"] = [srv.url]
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        proc = subprocess.run(
            [sys.executable, "-m", "builder.cli", "build", str(cfg), "small:test",
             str(tmp_path / "oci"), "--cache-dir", str(tmp_path / "cache"),
             "--ca-file", str(srv.ca_path)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        fetched = {e["path"] for e in srv.requests() if e["status"] == 200}
    assert "/x86_64/APKINDEX.tar.gz" in fetched
    assert any(p.startswith("/x86_64/go-") for p in fetched)
    layout = tmp_path / "oci"
    manifest = json.loads((layout / "index.json").read_text())["manifests"][0]
    tagged = tmp_path / "tagged"
    sh.copytree(layout, tagged)
    manifest["annotations"] = {"org.opencontainers.image.ref.name": "test"}
    (tagged / "index.json").write_text(json.dumps({"schemaVersion": 2,
                                                   "manifests": [manifest]}))
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{tagged}:test",
                    str(tmp_path / "bundle")], check=True, capture_output=True, timeout=120)
    root = tmp_path / "bundle" / "rootfs"
    assert (root / "usr/bin/ls").is_file() and not (root / "usr/bin/ls").is_symlink()
    assert os.readlink(root / "usr/bin/go") == "../lib/go/bin/go"
    assert (root / "usr/lib/go/bin/go").read_bytes()[:4] == b"\x7fELF"
    assert (root / "usr/bin/c++").stat().st_ino == (root / "usr/bin/g++").stat().st_ino
    assert os.readlink(root / "var/run") == "/run"
