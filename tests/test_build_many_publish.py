"""`apkimage build-many --publish REGISTRY/PREFIX` against Debian's docker-registry: every image
of a small layered world pushed to `PREFIX/<stem>:latest`, each distinct blob uploaded exactly
once across the world and the blobs images share mounted from the repository that got them
first (both counted from the registry's access log); skopeo reads back the digests build-many
reported; a second run sends nothing (HEADs only). A registry nobody listens on is one error
line naming the image and the registry; a failure mid-world leaves the images pushed before it.
With `--executor dask` and a content store on the same registry, the layers the workers stored
are mounted from the store: the world's layers cross the wire once in all."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from perf.workloads import Workload
from tests.helpers import (
    build_many_json,
    free_port,
    registry_log,
    require_tool,
    run_apkimage,
    run_registry,
    small_world,
)

pytestmark = pytest.mark.tools

PREFIX = "world"
HEX = r"([0-9a-f]{64})"






def _blobs(layout: Path) -> tuple[set[str], set[str]]:
    """The layer digests and the config digests of an OCI layout's images."""
    blobs = layout / "blobs" / "sha256"
    top = json.loads((layout / "index.json").read_text())
    layers: set[str] = set()
    configs: set[str] = set()
    todo = [m["digest"] for m in top["manifests"]]
    while todo:
        doc = json.loads((blobs / todo.pop().split(":")[1]).read_text())
        todo += [m["digest"] for m in doc.get("manifests", [])]
        layers |= {la["digest"] for la in doc.get("layers", [])}
        if "config" in doc:
            configs.add(doc["config"]["digest"])
    return layers, configs


def _uploads(log: str, repo: str = rf"{PREFIX}/[a-z]+") -> Counter[str]:
    """Completed blob uploads per digest (the PUT that ends an upload session)."""
    return Counter(re.findall(
        rf'"PUT /v2/{repo}/blobs/uploads/[^ "]*digest=sha256%3A{HEX}[^ "]* HTTP/1.1" 201', log))


def _mounts(log: str) -> Counter[str]:
    """Blobs mounted into the world's repositories (a POST with mount= the registry did)."""
    return Counter(m[1] or m[2] for m in re.finditer(
        rf'"POST /v2/{PREFIX}/[a-z]+/blobs/uploads/\?[^ "]*(?:mount=sha256%3A{HEX}|'
        rf'mount=sha256:{HEX})[^ "]* HTTP/1.1" 201', log))


class _Line:
    """A stand-in status line recording what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, name: str, arch: str = "") -> None:
        self.calls.append(("start", name))

    def expect(self, n: int, nbytes: int, unit: str = "packages") -> None:
        self.calls.append(("expect", n, unit))

    def package_done(self, nbytes: int) -> None:
        self.calls.append(("done",))

    def end(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_world_is_published_each_blob_once(small_workload: Workload, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("docker-registry")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    line = _Line()
    monkeypatch.setattr("builder.progress.for_build", lambda: line)
    configs = small_world(tmp_path, small_workload.config_path)
    cache = ("--layer-cache", "--cache-dir", str(tmp_path / "c"))
    with run_registry(tmp_path) as base:
        host = base.removeprefix("http://")
        doc = build_many_json(configs, tmp_path / "many", *cache, "--publish", f"{host}/{PREFIX}")
        log = registry_log(base, tmp_path)
        again = build_many_json(configs, tmp_path / "many", *cache, "--publish",
                            f"{host}/{PREFIX}")
        log_again = registry_log(base, tmp_path)[len(log):]
        inspected = {}
        if not (skopeo_missing := _skopeo_missing()):
            for img in doc["images"]:
                inspected[img["published"]["ref"]] = json.loads(subprocess.run(
                    ["skopeo", "inspect", "--tls-verify=false",
                     f"docker://{img['published']['ref']}"],
                    check=True, capture_output=True, text=True).stdout)

    # Each image went to PREFIX/<stem>:latest with the index digest it was built with.
    for cfg, img in zip(configs, doc["images"], strict=True):
        assert img["published"]["ref"] == f"{host}/{PREFIX}/{cfg.stem}:latest"
        assert img["published"]["digest"] == img["index_digest"]
    layers_of = {img["config"]: _blobs(Path(img["out"]))[0] for img in doc["images"]}
    configs_of = {img["config"]: _blobs(Path(img["out"]))[1] for img in doc["images"]}
    every_layer = set().union(*layers_of.values())
    every_config = set().union(*configs_of.values())
    holders = Counter(d for ds in layers_of.values() for d in ds)
    shared = {d for d, n in holders.items() if n > 1}
    assert shared, "the small world shares no layer"

    uploads, mounts = _uploads(log), _mounts(log)
    print(f"{len(configs)} images: {len(every_layer)} distinct layers ({len(shared)} shared by "
          f"several images, {sum(holders.values())} image-layers), {len(every_config)} "
          f"configs; {sum(uploads.values())} blob uploads, {sum(mounts.values())} mounts")
    # Each distinct blob (layer or config) uploaded exactly once across the whole world ...
    assert dict(uploads) == {d.split(":")[1]: 1 for d in every_layer | every_config}
    # ... and a shared layer mounted into every other repository that needed it.
    assert dict(mounts) == {d.split(":")[1]: holders[d] - 1 for d in shared}
    assert "PATCH " not in log  # monolithic uploads, no chunking at this size
    published = [img["published"] for img in doc["images"]]
    assert sum(len(p["uploaded"]) for p in published) == len(every_layer | every_config)
    assert sum(len(p["mounted"]) for p in published) == sum(holders[d] - 1 for d in shared)
    assert doc["total"]["published"]["mounted"] == sum(mounts.values())

    # A second --publish: every blob, manifest and tag HEADed and found; nothing sent.
    requests_again = re.findall(r'"([A-Z]+) (/v2/[^ "]*) HTTP/1.1"', log_again)
    assert requests_again and {m for m, _ in requests_again} <= {"HEAD", "GET"}, \
        sorted({m for m, _ in requests_again})
    assert {p for m, p in requests_again if m == "GET"} <= {"/v2/"}  # the ping
    for img in again["images"]:
        assert img["published"]["uploaded"] == img["published"]["mounted"] == []
        assert img["published"]["digest"] == img["index_digest"]
    assert [i["index_digest"] for i in again["images"]] == \
        [i["index_digest"] for i in doc["images"]]

    # The status line counted the pushes of each run: images pushed / total.
    first = line.calls[:line.calls.index(("start", "images"), 1)]
    start = first.index(("start", "publish"))
    assert first[start + 1] == ("expect", len(configs), "images")
    assert first[start + 2:] == [("done",)] * len(configs)

    if skopeo_missing:
        require_tool("skopeo")  # skips (or fails under APKIMAGE_REQUIRE_TOOLS=1) here
    for img in doc["images"]:
        meta = inspected[img["published"]["ref"]]
        assert meta["Digest"] == img["index_digest"], img["config"]
        (only,) = img["image"]["manifests"].values()
        assert meta["Layers"] == [la["digest"] for la in only["layers"]]


def _skopeo_missing() -> bool:
    import shutil

    return shutil.which("skopeo") is None


def test_a_registry_nobody_listens_on_is_one_line_naming_image_and_registry(
        small_workload: Workload, tmp_path: Path) -> None:
    configs = small_world(tmp_path, small_workload.config_path, 2)
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = run_apkimage("build-many", *configs, "--out-dir", tmp_path / "out", "--impl", "fast",
                        "--cache-dir", tmp_path / "c", "--publish", f"{host}/{PREFIX}",
                        env={"DOCKER_CONFIG": str(tmp_path / "no-docker-config")})
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("apkimage: error: "), proc.stderr
    assert f"{configs[0]}: publishing {host}/{PREFIX}/{configs[0].stem}:latest: " in lines[0]
    assert f"registry {host}: cannot connect" in lines[0], lines[0]
    assert proc.stdout == ""
    for cfg in configs:  # the builds stand
        assert (tmp_path / "out" / cfg.stem / "index.json").is_file()


def test_a_failure_mid_world_names_the_image_and_keeps_those_before(
        small_workload: Workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("docker-registry")
    from builder.errors import ApkImageError
    from builder.oci.publish import WorldImage, publish_world

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    configs = small_world(tmp_path, small_workload.config_path, 3)
    doc = build_many_json(configs, tmp_path / "out", "--layer-cache", "--cache-dir",
                      str(tmp_path / "c"))
    a, b, c = doc["images"]
    with run_registry(tmp_path) as base:
        host = base.removeprefix("http://")
        world = [WorldImage(img["config"], img["out"], f"{host}/{PREFIX}/{Path(img['out']).name}"
                            ":latest", img["index_digest"]) for img in (a, b, c)]
        # the second image's layout lost a layer after its build
        (layer, *_), _ = _blobs(Path(b["out"]))
        (Path(b["out"]) / "blobs" / "sha256" / layer.split(":")[1]).unlink()
        with pytest.raises(ApkImageError) as err:
            publish_world(world)
        msg = str(err.value)
        assert msg.startswith(f"{b['config']}: publishing {world[1].ref}: "), msg
        assert layer.split(":")[1] in msg
        tags = {}
        for w in world:
            repo = w.ref.removeprefix(f"{host}/").split(":")[0]
            r = requests.head(f"{base}/v2/{repo}/manifests/latest", timeout=10,
                              headers={"Accept": "application/vnd.oci.image.index.v1+json"})
            tags[repo] = (r.status_code, r.headers.get("Docker-Content-Digest"))
    assert tags == {f"{PREFIX}/{Path(a['out']).name}": (200, a["index_digest"]),
                    f"{PREFIX}/{Path(b['out']).name}": (404, None),
                    f"{PREFIX}/{Path(c['out']).name}": (404, None)}


@pytest.mark.slow
def test_dask_world_mounts_its_layers_from_the_content_store(
        small_workload: Workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("docker-registry")
    pytest.importorskip("distributed")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    configs = small_world(tmp_path, small_workload.config_path)
    with run_registry(tmp_path) as base:
        host = base.removeprefix("http://")
        doc = build_many_json(configs, tmp_path / "many", "--executor", "dask", "--workers", "2",
                          "--content-store", f"{host}/apkimage-cache", "--cache-dir",
                          str(tmp_path / "c"), "--publish", f"{host}/{PREFIX}")
        log = registry_log(base, tmp_path)
    every_layer = set().union(*(_blobs(Path(i["out"]))[0] for i in doc["images"]))
    every_config = set().union(*(_blobs(Path(i["out"]))[1] for i in doc["images"]))
    store_uploads = _uploads(log, "apkimage-cache")
    world_uploads = _uploads(log)
    print(f"dask world: {len(every_layer)} layers; {sum(store_uploads.values())} uploads to "
          f"the store, {sum(world_uploads.values())} to the world's repositories, "
          f"{sum(_mounts(log).values())} mounts")
    for img in doc["images"]:
        assert img["published"]["digest"] == img["index_digest"]
    # Every layer crossed the wire once, into the store; the world's repositories got only
    # their configs uploaded, each layer mounted.
    assert {d: store_uploads[d.split(":")[1]] for d in every_layer} == \
        {d: 1 for d in every_layer}
    assert dict(world_uploads) == {d.split(":")[1]: 1 for d in every_config}
    image_layers = sum(len(_blobs(Path(i["out"]))[0]) for i in doc["images"])
    assert sum(_mounts(log).values()) == image_layers


class _MountTokenRegistry(BaseHTTPRequestHandler):
    """A bearer-token registry that mounts a blob only when the token's scopes cover pulling
    from the source repository (as registries do; otherwise 202, an upload session)."""

    scopes: list[list[str]] = []

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
        url = urlsplit(self.path)
        if url.path == "/token":
            scopes = parse_qs(url.query)["scope"]
            self.scopes.append(scopes)
            return self._send(200, json.dumps({"token": "tok " + " ".join(scopes)}).encode())
        self._send(404)

    def do_POST(self) -> None:  # noqa: N802
        port = self.server.server_address[1]
        url = urlsplit(self.path)
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer tok "):
            return self._send(401, headers={"WWW-Authenticate": (
                f'Bearer realm="http://127.0.0.1:{port}/token",service="fake"')})
        source = parse_qs(url.query)["from"][0]
        if f"repository:{source}:pull" in auth.split(" "):
            return self._send(201, headers={"Location": url.path + "x"})
        self._send(202, headers={"Location": url.path + "session"})

    def do_DELETE(self) -> None:  # noqa: N802
        self._send(204)


def test_a_mount_asks_for_a_token_that_may_pull_from_the_source() -> None:
    from builder.oci.registry import Registry

    server = ThreadingHTTPServer(("127.0.0.1", 0), _MountTokenRegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reg = Registry(f"http://127.0.0.1:{server.server_address[1]}")
        assert reg.mount_blob(f"{PREFIX}/b", "sha256:" + "a" * 64, f"{PREFIX}/a")
        assert _MountTokenRegistry.scopes == [[f"repository:{PREFIX}/b:pull,push",
                                               f"repository:{PREFIX}/a:pull"]]
    finally:
        server.shutdown()
        server.server_close()
