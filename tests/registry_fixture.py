"""A real registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.

    with run_registry(tmp_path) as base:          # "http://127.0.0.1:PORT"
        ...
    with run_registry(tmp_path, htpasswd=make_htpasswd(tmp_path, "u", "p")) as base:
        ...

Storage lives under tmp_path; the process is stopped when the block exits.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_htpasswd(tmp_path: Path, user: str, password: str) -> Path:
    """A bcrypt htpasswd file (needs `htpasswd` from apache2-utils)."""
    if shutil.which("htpasswd") is None:
        raise FileNotFoundError("htpasswd (apache2-utils) is not installed")
    out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                         capture_output=True, text=True).stdout
    path = tmp_path / "htpasswd"
    path.write_text(out.strip() + "\n")
    return path


@contextmanager
def run_registry(tmp_path: Path, htpasswd: Path | None = None) -> Iterator[str]:
    """Start `docker-registry serve` on a free loopback port; yields its base URL."""
    port = free_port()
    root = tmp_path / f"registry-{port}"
    root.mkdir(parents=True)
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {root / 'storage'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
    ]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: test-realm", f"    path: {htpasswd}"]
    config = root / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    log = open(root / "registry.log", "wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited with {proc.returncode}: "
                    f"{(root / 'registry.log').read_text()[-2000:]}"
                )
            try:
                if requests.get(base + "/v2/", timeout=1).status_code in (200, 401):
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry on {base} did not come up in 20 s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
