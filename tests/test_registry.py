"""Registry client: reference parsing, docker config auth, bearer flow, and real pushes to
Debian's docker-registry checked with skopeo."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from builder.errors import RegistryError
from builder.oci.layout import BlobSource
from builder.oci.registry import (
    Auth,
    Reference,
    Registry,
    load_docker_auth,
    parse_reference,
    push_image,
)
from tests.helpers import golden_oci_inputs, make_htpasswd, require_tool, run_registry


@pytest.mark.parametrize(
    "ref,expected",
    [
        ("127.0.0.1:5000/golden:latest", Reference("127.0.0.1:5000", "golden", "latest")),
        ("localhost/a/b", Reference("localhost", "a/b")),
        ("reg.example.com/x/y@sha256:" + "a" * 64,
         Reference("reg.example.com", "x/y", "", "sha256:" + "a" * 64)),
        ("host:1/r:t@sha256:" + "b" * 64, Reference("host:1", "r", "t", "sha256:" + "b" * 64)),
        ("alpine", Reference("index.docker.io", "library/alpine")),
        ("user/img:1.0", Reference("index.docker.io", "user/img", "1.0")),
    ],
)
def test_parse_reference(ref: str, expected: Reference) -> None:
    assert parse_reference(ref) == expected


@pytest.mark.parametrize("bad", ["Upper/case", "host:5000/r:bad tag", "r@sha256:zz", "h.com/"])
def test_parse_reference_errors(bad: str) -> None:
    with pytest.raises(RegistryError, match="image reference"):
        parse_reference(bad)


def _write_docker_config(d: Path, host: str, user: str, pw: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{pw}".encode()).decode()
    (d / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))


def test_docker_config_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert load_docker_auth("r.example") is None
    _write_docker_config(tmp_path / "dc", "r.example:443", "me", "p:w")
    assert load_docker_auth("r.example:443") == Auth("me", "p:w")
    assert load_docker_auth("other") is None
    (tmp_path / "dc" / "config.json").write_text("{not json")
    with pytest.raises(RegistryError, match="config.json"):
        load_docker_auth("x")


class _TokenRegistry(BaseHTTPRequestHandler):
    """Minimal bearer-token registry: /token checks basic creds, /v2/* needs the token."""

    seen_scopes: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        port = self.server.server_address[1]
        if self.path.startswith("/token"):
            want = "Basic " + base64.b64encode(b"alice:secret").decode()
            if self.headers.get("Authorization") != want:
                return self._send(401)
            self.seen_scopes.append(self.path)
            return self._send(200, json.dumps({"token": "tok123"}).encode())
        if self.headers.get("Authorization") != "Bearer tok123":
            return self._send(401, headers={"WWW-Authenticate": (
                f'Bearer realm="http://127.0.0.1:{port}/token",service="fake",'
                'scope="repository:x:pull"')})
        return self._send(200, json.dumps({"name": "x", "tags": ["a", "b"]}).encode())


def test_bearer_token_flow() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenRegistry)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert Registry(base, Auth("alice", "secret")).tags("x") == ["a", "b"]
        assert "scope=repository%3Ax%3Apull" in _TokenRegistry.seen_scopes[-1]
        assert "service=fake" in _TokenRegistry.seen_scopes[-1]
        with pytest.raises(RegistryError, match=r"refused \(401.*token endpoint"):
            Registry(base, Auth("alice", "wrong")).tags("x")
        with pytest.raises(RegistryError, match="'x' refused"):
            Registry(base).tags("x")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.tools
def test_push_golden_and_check_with_skopeo(tmp_path: Path) -> None:
    require_tool("docker-registry", "skopeo")
    images, index, layers = golden_oci_inputs()
    with run_registry(tmp_path) as base:
        reg = Registry(base)
        reg.ping()
        host = base.removeprefix("http://")
        res = push_image(reg, "golden", ["latest"], index, images, layers)
        assert res.index_digest == index.digest
        assert len(res.uploaded) == 4 and res.skipped == []  # 2 layers + 2 configs
        assert reg.tags("golden") == ["latest"]
        assert reg.get_manifest("golden", "latest")[0] == index.data

        info = json.loads(subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{host}/golden:latest"],
            check=True, capture_output=True).stdout)
        assert info == json.loads(index.data)
        dig = json.loads(subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{host}/golden:latest"],
            check=True, capture_output=True).stdout)["Digest"]
        assert dig == index.digest

        # skopeo 1.9 does not know the descriptors' artifactType, so it rewrites the index
        # when copying it (documented limitation); the per-arch manifests keep their digests.
        out = tmp_path / "pulled"
        subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false",
                        f"docker://{host}/golden:latest", f"oci:{out}:latest"],
                       check=True, capture_output=True)
        top = json.loads((out / "index.json").read_text())["manifests"][0]["digest"]
        pulled = json.loads((out / "blobs" / "sha256" / top[7:]).read_bytes())
        ours = json.loads(index.data)
        for m in ours["manifests"]:
            del m["artifactType"]
        assert pulled == ours
        for img in images:
            one = tmp_path / f"one-{img.arch}"
            subprocess.run(["skopeo", "copy", "--preserve-digests", "--override-arch", img.arch,
                            "--src-tls-verify=false", f"docker://{host}/golden:latest",
                            f"oci:{one}:x"], check=True, capture_output=True)
            got = json.loads((one / "index.json").read_text())["manifests"][0]["digest"]
            assert got == img.manifest.digest
            assert (one / "blobs" / "sha256" / got[7:]).read_bytes() == img.manifest.data

        again = push_image(reg, "golden", ["latest", "v1"], index, images, layers)
        assert again.uploaded == [] and len(again.skipped) == 4
        assert sorted(reg.tags("golden")) == ["latest", "v1"]

        mounted = push_image(reg, "other", ["x"], index, images, layers, mount_from="golden")
        assert len(mounted.mounted) == 4 and mounted.uploaded == []


@pytest.mark.tools
def test_chunked_upload(tmp_path: Path) -> None:
    require_tool("docker-registry")
    payload = os.urandom(300_000)
    path = tmp_path / "blob"
    path.write_bytes(payload)
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    with run_registry(tmp_path) as base:
        reg = Registry(base, chunk_threshold=1000, chunk_size=64 * 1024)
        reg.upload_blob("chunky", BlobSource.from_file(path, digest))
        assert reg.blob_exists("chunky", digest)
        got = requests.get(f"{base}/v2/chunky/blobs/{digest}", timeout=10).content
        assert got == payload
        with pytest.raises(RegistryError, match="400|digest"):
            reg.upload_blob("chunky", BlobSource("sha256:" + "0" * 64, 5, data=b"hello"))


@pytest.mark.tools
def test_htpasswd_registry_needs_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("docker-registry", "htpasswd")
    images, index, layers = golden_oci_inputs()
    htpasswd = make_htpasswd(tmp_path, "bob", "hunter2")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty-config"))
    with run_registry(tmp_path, htpasswd=htpasswd) as base:
        host = base.removeprefix("http://")
        with pytest.raises(RegistryError) as err:
            push_image(Registry.for_host(host), "secure", ["t"], index, images, layers)
        msg = str(err.value)
        assert host in msg and "'secure'" in msg and "401" in msg and "without" in msg
        _write_docker_config(tmp_path / "dc", host, "bob", "wrong")
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
        with pytest.raises(RegistryError, match="credentials rejected"):
            push_image(Registry.for_host(host), "secure", ["t"], index, images, layers)
        _write_docker_config(tmp_path / "dc", host, "bob", "hunter2")
        res = push_image(Registry.for_host(host), "secure", ["t"], index, images, layers)
        assert res.index_digest == index.digest and len(res.uploaded) == 4
