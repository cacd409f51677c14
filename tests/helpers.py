"""Everything the test modules share, in one place (no test module imports another).

Session fixtures built on these (the warm golden cache, the `small` workload, a signing key)
are in conftest.py. Sections:

- paths and tools: REPO_ROOT, FIXTURES, KEYS, GOLDEN, SOLVER_CASES; require_tool()
- apko's golden fixture: its digests, annotations and image inputs; golden_workdir(),
  build_golden() (the CLI, like apko's test), golden_spec(), golden_oci_inputs()
- repositories made in tests: repo_from_apks(), the package_sets() hypothesis strategy and
  apks_of_package_set(), REAL_PACKAGES, build_in_process() (pipeline, not CLI)
- a static HTTP(S) repository server: RepoServer, GOLDEN_REPO, fast_fetcher()
- a real registry: run_registry(), make_htpasswd() (Debian's docker-registry, htpasswd)
- image trees: unpack() with umoci, snapshot(), differences() (DESIGN.md invariant 4)
- hostile packages: tar_entry(), zero_member(), apk_sections()/hostile_apk(), index_record(),
  hostile_repo(), tree_state(), refused(), layout_tree()
- faults and concurrency: FAST_HTTP_ENV, golden_http_config(), run_apkimage() (a subprocess),
  cache_contents(), leftovers(), checked_layout()
- the HTML report: make_rec() (a run record), broken_links() (the href/src of a page that
  resolve to no file, or to no id in it), world_doc() (a synthetic `apkperf world` record)
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pytest
import requests
import yaml
from hypothesis import strategies as st

from builder.apk.writer import DataEntry
from perf import records as run_records
from perf.machine import machine_id, machine_info

if TYPE_CHECKING:
    from builder.oci.image import Image, ImageSpec
    from builder.oci.layout import BlobSource
    from builder.repo.fetch import Fetcher

# -------------------------------------------------------------------------------- paths and tools

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT.parent / "shared" / "apk-fixtures"
KEYS = FIXTURES / "keys"
GOLDEN = FIXTURES / "apko-golden"
SOLVER_DIR = FIXTURES / "apk-tools-solver-tests"  # apk-tools' own solver test cases
SOLVER_CASES = sorted(SOLVER_DIR.glob("*.test")) if SOLVER_DIR.is_dir() else []


def _missing_tool(reason: str) -> None:
    """Skip — or fail, where `make test` runs as root and has installed every tool
    (APKIMAGE_REQUIRE_TOOLS=1), so that a tool test cannot pass by not running."""
    if os.environ.get("APKIMAGE_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{reason} (APKIMAGE_REQUIRE_TOOLS=1)")
    pytest.skip(reason)


def require_tool(*names: str) -> None:
    """Skip the calling test when a Debian tool is not installed (make test installs them).
    Tests calling this carry the `tools` marker (`make test-fast` leaves them out)."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        _missing_tool(f"missing tools: {', '.join(missing)} (run `make tools` as root)")


def require_umoci_with_zstd() -> None:
    """umoci 0.5 or newer (Debian 12's 0.4.7 cannot unpack tar+zstd layers; `make tools`
    puts a newer one in .venv/tools/bin)."""
    require_tool("umoci")
    out = subprocess.run(["umoci", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    if not m or (int(m[1]), int(m[2])) < (0, 5):
        _missing_tool(f"umoci {m[0] if m else '?'} cannot unpack zstd layers; "
                      "`make tools` installs a newer one into .venv/tools/bin")


# -------------------------------------------------------------------------- apko's golden fixture

# What apko built from GOLDEN/apko.yaml, by OCI arch: the layer's diffID, the config digest.
GOLDEN_DIFF_IDS = {
    "amd64": "sha256:20f698463c2755b6dc42b7d07e959ed7455a06e7367d507e829a315898f21a01",
    "arm64": "sha256:ca5e16c7c944d764863cb1a4286e668e72d6d87ef9ddd82337b19d87715bae7e",
}
GOLDEN_CONFIGS = {
    "amd64": "sha256:6c815259150f37d000417f9a93f41bddf74dff905c745986069d4b03e954ac1d",
    "arm64": "sha256:fbb854f9d5a601a36c4dc8cc82e5b21e91b11cdd4aab5035340e4f517c5a8eb1",
}
# The annotations apko's golden test passed: as a dict, and as `apkimage build` arguments.
GOLDEN_ANNOTATIONS = {
    "org.opencontainers.image.title": "Title",
    "org.opencontainers.image.vendor": "Vendor",
}
GOLDEN_ANNOTATION_ARGS = [arg for key, value in GOLDEN_ANNOTATIONS.items()
                          for arg in ("--annotations", f"{key}:{value}")]
GOLDEN_BLOBS = GOLDEN / "golden" / "blobs" / "sha256"
# apk arch -> (golden layer blob, golden config, golden manifest), hex digests
GOLDEN_IMAGES = {
    "x86_64": (
        "c7557730da0e2d7fb242d8d1ac6dcf7e3a2439732aa5981270b4f3a02454b738",
        "6c815259150f37d000417f9a93f41bddf74dff905c745986069d4b03e954ac1d",
        "69f0237c7f8cf0b8a329d1bf1d6870c870c4ec323e39d3a6da59596632d0f2f4",
    ),
    "aarch64": (
        "7e0f9d62f6cab4785e18a55f17d03f20ffb776881f1f46258efd9458f7cdaf08",
        "fbb854f9d5a601a36c4dc8cc82e5b21e91b11cdd4aab5035340e4f517c5a8eb1",
        "124c885f834cfaf1329987457a9651a68c4fb9733d4462ae6288b98011277858",
    ),
}
GOLDEN_REPO = GOLDEN / "packages"  # the signed repository: index + 4 packages per arch


def golden_workdir(tmp_path: Path) -> Path:
    """apko's test resolves `./testdata/...` against its working directory: give it one
    (`tmp_path/wd`, made once)."""
    wd = tmp_path / "wd"
    if not wd.exists():
        wd.mkdir()
        (wd / "testdata").symlink_to(GOLDEN)
    return wd


def build_golden(tmp_path: Path, out: Path, *extra: str, cache: Path | None = None) -> dict:
    """`apkimage build` of the golden fixture into `out`, with apko's annotations; the spans
    document (`image` summary and `spans`). The cache is `tmp_path/cache` unless given (the
    session's warm `golden_cache`, for tests that only read a cache)."""
    wd = golden_workdir(tmp_path)
    spans = tmp_path / f"spans-{out.name}.json"
    from builder.cli import main

    rc = main(["build", str(GOLDEN / "apko.yaml"), "golden:latest", str(out), "--workdir",
               str(wd), "--cache-dir", str(cache or tmp_path / "cache"), "--spans", str(spans),
               *GOLDEN_ANNOTATION_ARGS, *extra])
    assert rc == 0
    return json.loads(spans.read_text())


def golden_spec(arch: str) -> ImageSpec:
    """The inputs apko had: apko.yaml + the test's annotations + diffID/digest of the layer."""
    from builder.oci.image import Descriptor, ImageSpec

    cfg = yaml.safe_load((GOLDEN / "apko.yaml").read_text())
    layer_hex = GOLDEN_IMAGES[arch][0]
    blob = (GOLDEN_BLOBS / layer_hex).read_bytes()
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    return ImageSpec(
        arch=arch,
        diff_ids=[diff_id],
        layers=[Descriptor("sha256:" + layer_hex, len(blob))],
        created=0,
        entrypoint=cfg["entrypoint"]["command"].split(),
        annotations=dict(GOLDEN_ANNOTATIONS),
    )


def golden_oci_inputs() -> tuple[list[Image], Image, list[BlobSource]]:
    """apko's golden images rebuilt from their specs: (images, index, layer blobs)."""
    from builder.oci.image import build_image, build_index
    from builder.oci.layout import BlobSource

    images = [build_image(golden_spec(a)) for a in sorted(GOLDEN_IMAGES)]
    index = build_index(images, dict(GOLDEN_ANNOTATIONS))
    layers = [BlobSource.from_file(GOLDEN_BLOBS / v[0], "sha256:" + v[0])
              for v in GOLDEN_IMAGES.values()]
    return images, index, layers


# --------------------------------------------------------------------- repositories made in tests

# Real Alpine (abuild), Wolfi and melange packages from the fixtures, by arch; the
# multi-member tzdata data section, and a replaces pair on each arch.
REAL_PACKAGES = {
    "x86_64": ["alpine/curl-7.83.1-r1.apk", "alpine/strace-5.17-r0.apk",
               "wolfi/ruby3.2-base64-0.2.0-r2.apk",
               "melange-local/tzdata-2023c-r0.multimember.x86_64.apk",
               "melange-local/pretend-baselayout-1.0.0-r0.apk",
               "melange-local/replayout-1.0.0-r0.apk",  # replaces pretend-baselayout
               "melange-local/hello-0.1.0-r0.apk"],
    "aarch64": ["wolfi/hello-wolfi-2.12-r1.apk", "wolfi/libcap-2.69-r0.apk",
                "wolfi/wolfi-base-1-r1.aarch64.apk", "wolfi/kubeflow-pipelines-2.1.3-r7.apk",
                "alpine/alpine-baselayout-3.2.0-r23.aarch64.apk",
                "melange-local/replaces-0.0.1-r0.apk"],
}


def repo_from_apks(tmp: Path, apks: dict[str, bytes], key: tuple[bytes, bytes],
                   packages: list[str] | None = None, arch: str = "x86_64") -> Path:
    """A signed repository of `apks` (file name -> bytes) for `arch` and an apko.yaml
    installing `packages` (default: all of them); returns the config's path."""
    from builder.apk.index import index_record_from_apk, write_index
    from builder.apk.package import read_apk

    private, public = key
    repo = tmp / "repo" / arch
    repo.mkdir(parents=True)
    records = []
    for name, data in apks.items():
        rec = index_record_from_apk(read_apk(data, name), len(data))
        rec.depends = []  # keep the repository self-contained
        records.append(rec)
        (repo / rec.filename).write_bytes(data)
    (repo / "APKINDEX.tar.gz").write_bytes(write_index(records, private, "local.rsa.pub"))
    (tmp / "local.rsa.pub").write_bytes(public)
    names = packages if packages is not None else sorted(r.name for r in records)
    cfg = tmp / "apko.yaml"
    cfg.write_text(f"contents:\n  keyring: [{tmp / 'local.rsa.pub'}]\n"
                   f"  repositories: [{tmp / 'repo'}]\n"
                   f"  packages: [{', '.join(names)}]\n"
                   "accounts:\n  users: [{username: app, uid: 1000}]\n  run-as: app\n"
                   f"archs: [{arch}]\n")
    return cfg


_DIRS = ["usr", "usr/lib", "usr/bin", "etc", "etc/conf.d", "opt", "opt/x"]
_LINK_TARGETS = ["f1", "../bin/f1", "/usr/lib", "usr/lib/f1", "/etc/../../f2", "opt",
                 "/usr/bin", "l1"]
_CONTENTS = [b"", b"same\n", b"x" * 700, bytes(range(256)) * 9]

PackageSet = list[tuple[str, list[DataEntry], list[str]]]  # (name, entries, replaces)


@st.composite
def package_sets(draw: st.DrawFn) -> PackageSet:
    """1-3 packages p0, p1, ... with overlapping dirs, files, symlinks (usrmerge, absolute,
    escaping), hardlinks, and replaces of earlier packages. Some sets are conflicts the
    builder must refuse (see INSTALL_CONFLICTS)."""
    n = draw(st.integers(1, 3))
    out = []
    for i in range(n):
        entries: dict[str, DataEntry] = {}
        mtime = draw(st.sampled_from([0, 1000, 2000]))

        def add_dir(path: str, entries: dict[str, DataEntry] = entries,
                    mtime: int = mtime) -> None:
            parent = path.rpartition("/")[0]
            if parent:
                add_dir(parent)
            if path not in entries:
                entries[path] = DataEntry(path, "dir", draw(st.sampled_from(
                    [0o755, 0o700, 0o2775])), mtime=mtime)

        if i == 0 and draw(st.booleans()):
            entries["lib"] = DataEntry("lib", "symlink", linkname="usr/lib", mtime=mtime)
        files: list[str] = []
        for _ in range(draw(st.integers(0, 6))):
            d = draw(st.sampled_from(_DIRS + ["lib"]))
            kind = draw(st.sampled_from(["file", "file", "symlink", "hardlink", "dir"]))
            path = f"{d}/{draw(st.sampled_from(['f1', 'f2', 'l1', 'sub']))}"
            if path in entries or (d == "lib" and "lib" not in entries and i == 0):
                continue
            if d != "lib":
                add_dir(d)
            if kind == "file":
                entries[path] = DataEntry(path, "file", draw(st.sampled_from(
                    [0o644, 0o755, 0o4755])), mtime=mtime, data=draw(st.sampled_from(
                        _CONTENTS)))
                files.append(path)
            elif kind == "symlink":
                entries[path] = DataEntry(path, "symlink", linkname=draw(
                    st.sampled_from(_LINK_TARGETS)), mtime=mtime)
            elif kind == "hardlink" and files:
                entries[path] = DataEntry(path, "hardlink", linkname=draw(
                    st.sampled_from(files)), mtime=mtime)
            elif kind == "dir":
                add_dir(path)
        replaces = draw(st.lists(st.sampled_from([f"p{j}" for j in range(i)]), unique=True)) \
            if i else []
        out.append((f"p{i}", list(entries.values()), replaces))
    return out


# The errors with which the install stage refuses a package set that cannot be installed
# (FormatError messages): what package_sets() may legitimately produce besides an image.
INSTALL_CONFLICTS = (
    "(neither package replaces the other)",
    "is a directory in the image",  # and the package has a non-directory there
    "is not a directory",  # a parent, or a path a directory must be created under
    "escapes the image root",
    "target is not a file",  # a hardlink to a path that holds a symlink or directory
    "too many levels of symlinks",  # a symlink loop (lib/f1 -> ../lib/f1)
    "links to itself",
)


def is_install_conflict(exc: BaseException) -> bool:
    from builder.errors import FormatError

    return isinstance(exc, FormatError) and any(m in str(exc) for m in INSTALL_CONFLICTS)


def apks_of_package_set(pkgs: PackageSet) -> dict[str, bytes]:
    """Unsigned .apk bytes (file name -> bytes) for a package_sets() example."""
    from builder.apk.writer import build_apk

    apks = {}
    for name, entries, replaces in pkgs:
        info: dict[str, list[str]] = {"pkgname": [name], "pkgver": ["1-r0"],
                                      "arch": ["x86_64"], "builddate": ["1700000000"],
                                      "license": ["MIT"], "origin": [name]}
        if replaces:
            info["replaces"] = replaces
        apks[f"{name}.apk"] = build_apk(info, entries, None, "none", level=1)
    return apks


def build_in_process(config: Path, cache: Path, spec: str, work: Path) -> tuple[dict, list]:
    """Build `config` with `--impl spec` through the pipeline (errors raise, with their
    message); the summary (digests per arch) and the spans."""
    from builder.pipeline import build
    from builder.plan import BuildOptions
    from builder.spans import SpanRecorder
    from builder.stages.profiles import parse_impl

    rec = SpanRecorder()
    work.mkdir(parents=True, exist_ok=True)
    opts = BuildOptions(config=str(config), cache_dir=str(cache), impl=parse_impl(spec),
                        sbom=True)
    res = build(opts, work, rec)
    return res.summary(), rec.spans


# ---------------------------------------------------------------------- HTTP(S) repository server


class _QuietServer(http.server.ThreadingHTTPServer):
    """A client that hangs up (a killed build, a timeout) is not an error worth a traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class RepoServer:
    """A tiny static repository server on 127.0.0.1 that records requests and injects
    failures (5xx statuses, bodies cut short, latency, no answer).

    `fail[path]` lists what the next requests of `path` get, one entry each: a status code,
    "cut" (Content-Length promised, half the body sent, connection shut), "short" (no
    Content-Length, half the body, connection closed: a truncation only the content's own
    checks can see), "hang" (no answer at all), "stall" (headers and half the body, then
    nothing). A hanging answer ends after `hang_s` seconds or when the server stops."""

    def __init__(self, root: Path, tls_files: tuple[Path, Path] | None = None) -> None:
        self.root = root
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.times: list[tuple[float, str]] = []  # (time.monotonic(), path) of each request
        self.client_ports: set[int] = set()  # one per TCP connection: shows reuse
        self.fail: dict[str, list[int | str]] = {}  # path -> what the next requests get
        self.delay = 0.0  # seconds of latency added to every request
        self.hang_s = 30.0
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers+body cost a 40 ms delayed ACK

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                with server.lock:
                    server.requests.append(("GET", self.path))
                    server.times.append((time.monotonic(), self.path))
                    server.client_ports.add(self.client_address[1])
                    plan = server.fail.get(self.path)
                    action = plan.pop(0) if plan else None
                if server.delay:
                    time.sleep(server.delay)
                if isinstance(action, int):
                    self.send_error(action)
                    return
                if action == "hang":
                    server.stopping.wait(server.hang_s)
                    self.close_connection = True
                    return
                from urllib.parse import unquote

                target = (server.root / unquote(self.path).lstrip("/")).resolve()
                if server.root.resolve() not in target.parents or not target.is_file():
                    self.send_error(404)
                    return
                body = target.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if action == "short":
                    self.send_header("Connection", "close")
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", formatdate(target.stat().st_mtime, usegmt=True))
                self.end_headers()
                if action in ("cut", "short", "stall"):  # half the body, then...
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if action == "stall":  # ... nothing more
                        server.stopping.wait(server.hang_s)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        scheme = "http"
        if tls_files is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls_files[0]), str(tls_files[1]))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> RepoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def gets(self, suffix: str = "") -> list[str]:
        with self.lock:
            return [p for m, p in self.requests if m == "GET" and p.endswith(suffix)]


def fast_fetcher(cache_dir: Path, **kw: object) -> Fetcher:
    """A Fetcher with small timeouts and backoff: failure tests must stay quick."""
    from builder.repo.fetch import Fetcher

    opts: dict[str, object] = {"timeout": 5.0, "retries": 2, "backoff": 0.01}
    opts.update(kw)
    return Fetcher(cache_dir, **opts)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------- a real registry
#
#     with run_registry(tmp_path) as base:          # "http://127.0.0.1:PORT"
#         ...
#     with run_registry(tmp_path, htpasswd=make_htpasswd(tmp_path, "u", "p")) as base:
#         ...
#
# Debian's `docker-registry` (distribution 2.8); storage lives under tmp_path, the process
# is stopped when the block exits.


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


# ------------------------------------------------------------------------------------ image trees


def registry_log(base: str, tmp_path: Path) -> str:
    """The access log, so far, of the docker-registry `run_registry(tmp_path)` started at
    `base`."""
    return (tmp_path / f"registry-{base.rsplit(':', 1)[1]}" / "registry.log").read_text()


def build_many_json(configs: list[Path], out: Path, *args: str) -> dict:
    """`apkimage build-many CONFIGS --out-dir OUT --impl fast --json ARGS` in this process:
    its JSON document (the run must succeed)."""
    import contextlib

    from builder.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["build-many", *map(str, configs), "--out-dir", str(out), "--impl", "fast",
                   "--json", *args])
    assert rc == 0
    return json.loads(buf.getvalue())


def tagged_layout(layout: Path, manifest_digest: str, dest: Path, tag: str = "img") -> Path:
    """An OCI layout at `dest` sharing `layout`'s blobs whose index.json tags the one
    manifest `manifest_digest` as `tag` (our index.json is the image index; umoci and skopeo
    resolve tags through index.json)."""
    blob = layout / "blobs" / "sha256" / manifest_digest.split(":")[1]
    dest.mkdir(parents=True)
    (dest / "blobs").symlink_to(layout.resolve() / "blobs")
    (dest / "oci-layout").write_bytes((layout / "oci-layout").read_bytes())
    (dest / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": blob.stat().st_size,
                       "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return dest


def unpack(layout: Path, manifest_digest: str, dest: Path) -> Path:
    """`umoci unpack` one manifest of an OCI layout into `dest`; returns the rootfs."""
    tagged = tagged_layout(layout, manifest_digest, dest.parent / f"{dest.name}-layout")
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    proc = subprocess.run(["umoci", "unpack", *rootless, "--image", f"{tagged}:img", str(dest)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"umoci unpack failed: {proc.stderr.strip()}")
    return dest / "rootfs"


def snapshot(root: Path) -> dict[str, tuple]:
    """path -> (type, mode, uid, gid, mtime, content digest | link target | device), plus
    hardlink groups under the key "<hardlinks>"."""
    tree: dict[str, tuple] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                what = ("file", hashlib.sha256(full.read_bytes()).hexdigest())
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                what, mode = ("symlink", os.readlink(full)), 0
            elif stat.S_ISDIR(st.st_mode):
                what = ("dir", "")
            else:
                what = ("node", st.st_rdev)
            tree[rel] = (*what, mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    tree["<hardlinks>"] = tuple(sorted(tuple(sorted(v)) for v in inodes.values()))
    return tree


def differences(a: dict[str, tuple], b: dict[str, tuple], limit: int = 20) -> list[str]:
    """The first `limit` paths whose snapshot entries differ, one line each."""
    out = []
    for path in sorted(set(a) | set(b)):
        if a.get(path) != b.get(path):
            out.append(f"{path}: {a.get(path)} != {b.get(path)}")
            if len(out) >= limit:
                break
    return out


# --------------------------------------------------------------------------- perf records

SPANS = {
    "version": 1,
    "spans": [
        {"name": "fetch", "arch": "x86_64", "wall_s": 0.2, "cpu_s": 0.1, "bytes_in": 10,
         "bytes_out": 20, "attrs": {"impl": "reference"}},
        {"name": "compress", "arch": "x86_64", "wall_s": 0.5, "cpu_s": 0.5, "bytes_in": 100,
         "bytes_out": 30, "attrs": {"impl": "zlib", "level": 6, "blocks": 4}},
        {"name": "compress", "arch": "aarch64", "wall_s": 0.4, "cpu_s": 0.4, "bytes_in": 90,
         "bytes_out": 25, "attrs": {"blocks": 3}},
    ],
    "total": {"wall_s": 1.1, "cpu_s": 1.0},
    "image": {"index_digest": "sha256:" + "a" * 64, "impl": {"compress": "zlib:6"},
              "manifests": {"x86_64": {"digest": "sha256:" + "b" * 64, "diff_ids": ["sha256:d1"]},
                            "aarch64": {"digest": "sha256:" + "c" * 64,
                                        "diff_ids": ["sha256:d2"]}}},
}


def make_rec(side="reference", round_=0, scale=1.0, scenario="hot", commit="1" * 40,
             started="2026-01-01T00:00:00.000+00:00", compress=0.9, job="job1", impl=None):
    """A valid run record of the small hot build, its fetch and compress stages scaled."""
    stages = run_records.stages_from_spans(SPANS)
    stages["compress"]["wall_s"] = compress * scale
    stages["fetch"]["wall_s"] = 0.2 * scale
    image = run_records.image_from_spans(SPANS)
    info = machine_info()
    return {
        "schema": run_records.SCHEMA_VERSION, "workload": "small", "scenario": scenario,
        "impl": impl or side, "side": side, "commit": commit, "dirty": False,
        "wall_s": (0.3 + 0.2 + compress) * scale, "cpu_s": 1.0, "peak_rss_mb": 80.0,
        "stages": stages, "image": image, "compressor": run_records.compressor_of(stages, image),
        "machine": info, "machine_id": machine_id(info), "started_at": started, "job": job,
        "round": round_,
    }


class _Links(HTMLParser):
    """Every href/src/xlink:href of a page, and every id on it."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("href", "src", "xlink:href") and value:
                self.targets.append(value)
            elif key == "id" and value:
                self.ids.add(value)


def page_links(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text())
    return parser


def broken_links(page: Path) -> list[str]:
    """The links of an HTML page that resolve to no file beside it, or (`file#id`) to no id
    in that file; links to other sites and within the page are not followed."""
    bad = []
    for t in page_links(page).targets:
        url = urlparse(t)
        if url.scheme or t.startswith("#"):
            continue
        target = page.parent / unquote(url.path)
        if not target.exists():
            bad.append(t)
        elif url.fragment and target.suffix == ".html" and (
                url.fragment not in page_links(target).ids):
            bad.append(t)
    return bad


WORLD_IMAGES = {"static": ["baselayout"], "sqlite": ["baselayout", "sqlite-libs"],
                "sqlite-dev": ["baselayout", "sqlite-libs", "busybox"]}


def _world_spans(name: str, packages: list[str], version: str, lc: bool, impl: str,
                 made_keys: set[str], scale: float) -> list[dict[str, Any]]:
    """An image's spans: fetch and install, then per layer (one per package, then the top
    one) a cache lookup when `lc` (a hit when an earlier image made its key) and, when it
    misses, the layer and compress spans of making it."""
    def span(stage: str, cpu: float, attrs: dict[str, Any] | None = None, bytes_in: int = 0,
             bytes_out: int = 0) -> dict[str, Any]:
        return {"name": stage, "arch": "x86_64", "wall_s": cpu * scale, "cpu_s": cpu * scale,
                "bytes_in": bytes_in, "bytes_out": bytes_out, "attrs": attrs or {}}

    spans = [span("fetch", 0.004), span("install", 0.010)]
    keys = [f"{p}-{version if p == 'sqlite-libs' else '1'}" for p in packages]
    bumped = "sqlite-libs" in packages
    keys.append(f"top-{name}-{version if bumped else '1'}")
    for index, key in enumerate(keys):
        tar = 1_000_000 * (index + 1)
        if lc:
            hit = key in made_keys
            attrs: dict[str, Any] = {"output": "cache", "layer": index, "layer_key": key,
                                     "layer_cache": "hit" if hit else "miss"}
            if hit:
                spans.append(span("layer", 0.001, attrs | {"entries": 10 * (index + 1),
                                                           "reused_tar_bytes": tar}))
                spans.append(span("compress", 0.0, {"output": "cache", "layer_cache": "hit",
                                                     "layer": index}))
                continue
            spans.append(span("layer", 0.001, attrs))
            made_keys.add(key)
        out = "blob" if impl == "stitched" else "stream"
        spans.append(span("layer", 0.020, {"output": out, "layer": index,
                                           "entries": 10 * (index + 1)}, bytes_out=tar))
        comp: dict[str, Any] = {"output": out, "layer": index}
        if out == "blob":
            comp |= {"recompressed_in": tar // 100, "reused_bytes": tar // 3}
        spans.append(span("compress", 0.030 if out == "stream" else 0.002, comp,
                          bytes_in=tar, bytes_out=tar // 3))
    return spans


def world_doc(commit: str, started: str, scale: float = 1.0, dirty: bool = False,
              variants: tuple[str, ...] = ("fast", "stitched+lc")) -> dict[str, Any]:
    """A world record as `apkperf world --workload world-small --scenario world,world-bump`
    would store it (one round, WORLD_IMAGES, `sqlite-libs` bumped), every image's spans
    made up and summarised by perf/worldrun.py's own functions; CPU scaled by `scale`."""
    from perf import worldrun

    runs = []
    for variant in variants:
        impl, lc = variant.replace("+lc", ""), variant.endswith("+lc")
        made: set[str] = set()
        for scenario, version in (("world", "3.45.2-r0"), ("world-bump", "3.45.3-r1")):
            images = []
            for name, packages in WORLD_IMAGES.items():
                spans = _world_spans(name, packages, version, lc, impl, made, scale)
                cpu = sum(sp["cpu_s"] for sp in spans) + 0.005 * scale
                holds = "sqlite-libs" in packages
                digest = "sha256:" + hashlib.sha256(
                    f"{impl}/{name}/{version if holds else ''}".encode()).hexdigest()
                images.append(worldrun.image_summary(name, {"spans": spans}, digest,
                                                     cpu * 1.1, cpu, in_process=True))
            totals = worldrun.world_totals(images)
            cpu_s = totals["image_cpu_s"] + 0.3 * scale
            runs.append({"scenario": scenario, "variant": variant, "impl": impl,
                         "layer_cache": lc, "round": 0, "wall_s": cpu_s * 1.2, "cpu_s": cpu_s,
                         "cpu_per_image_s": cpu_s / len(images), "peak_rss_mb": 60.0,
                         **totals, "per_image": images})
    info = machine_info()
    return {"schema": worldrun.SCHEMA, "kind": "world", "workload": "world-small",
            "job": f"{started[:10]}-{commit[:6]}", "commit": commit, "dirty": dirty,
            "machine_id": machine_id(info), "machine": info, "started_at": started,
            "mode": "many", "cpu_note": worldrun.CPU_NOTE["many"], "filesystem": "tmpfs",
            "work_dir": "/dev/shm/apkperf-world/x", "scenarios": ["world", "world-bump"],
            "variants": list(variants), "repeat": 1,
            "bump": {"package": "sqlite-libs", "version": "3.45.3-r1"},
            "world": {"name": "world-small", "images": [
                {"name": n, "packages": p} for n, p in WORLD_IMAGES.items()]},
            "runs": runs, "checks": worldrun.check_digests(runs)}


# --------------------------------------------------------------------------- hostile packages


def tar_entry(name: str | bytes, type: str = "0", data: bytes = b"", *, mode: int = 0o644,
              linkname: str | bytes = "", checksum: bool | str = True, size: int | None = None,
              pax: dict[str, str] | None = None, devmajor: int = 0,
              devminor: int = 0) -> bytes:
    """One raw data-tar entry, exactly as given (no path cleaning, any typeflag): header,
    content, padding. A regular or contiguous file gets a correct APK-TOOLS.checksum.SHA1
    unless `checksum` is False (none) or a string (that value)."""
    from builder.gotar import TarHeader, encode_header, padding

    records: dict[str | bytes, str | bytes] = dict(pax or {})
    if type in ("0", "7") and checksum is not False:
        records["APK-TOOLS.checksum.SHA1"] = (checksum if isinstance(checksum, str)
                                              else hashlib.sha1(data).hexdigest())
    header = TarHeader(name, type, mode, size=len(data) if size is None else size,
                       linkname=linkname, devmajor=devmajor, devminor=devminor, pax=records)
    return encode_header(header) + data + padding(len(data))


def zero_member(size: int) -> bytes:
    """A valid gzip member that inflates to `size` zero bytes, made in milliseconds: one
    DEFLATE block of 16 MiB of zeros (full flush: byte-aligned, no reference before its
    start) repeated, the remainder, an empty final block, CRC and size."""
    import struct
    import zlib

    from isal import isal_zlib

    unit = 1 << 24
    count, rest = divmod(size, unit)

    def block(n: int) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(bytes(n)) + c.flush(zlib.Z_FULL_FLUSH) if n else b""

    crc, unit_crc = 0, zlib.crc32(bytes(unit))
    for _ in range(count):
        crc = isal_zlib.crc32_combine(crc, unit_crc, unit)
    crc = isal_zlib.crc32_combine(crc, zlib.crc32(bytes(rest)), rest) if rest else crc
    body = block(unit) * count + block(rest) + b"\x03\x00"  # empty final fixed block
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + body
            + struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))


def apk_sections(name: str, body: bytes | None, key: tuple[bytes, bytes] | None, *,
                 version: str = "1.0-r0", data: bytes | None = None,
                 fields: dict[str, list[str]] | None = None,
                 key_name: str = "local.rsa.pub") -> tuple[bytes, bytes, bytes]:
    """(signature member, control member, data section) of a package whose data tar is the
    raw entries `body` plus the end marker (or whose data section is `data` as given). The
    .PKGINFO datahash is the data section's, so the package passes the fetch checks and the
    hostile part is what the later checks see. Unsigned (b"") when `key` is None."""
    from builder.apk.signing import sign, signature_member
    from builder.apk.writer import build_control
    from builder.deflate.gzipstream import gzip_member
    from builder.gotar import END_MARKER

    if data is None:
        data = gzip_member((body or b"") + END_MARKER, level=1)
    info = {"pkgname": [name], "pkgver": [version], "arch": ["x86_64"], "size": ["1"],
            "origin": [name], "license": ["MIT"], "builddate": ["1700000000"]}
    info.update(fields or {})
    info["datahash"] = [hashlib.sha256(data).hexdigest()]
    control = build_control(info, {}, 1700000000, level=6)
    sig = b"" if key is None else signature_member(key_name, sign(key[0], control, "sha256"))
    return sig, control, data


def hostile_apk(name: str, body: bytes | None, key: tuple[bytes, bytes] | None,
                **kw: object) -> bytes:
    """`apk_sections` joined: the whole `.apk`."""
    return b"".join(apk_sections(name, body, key, **kw))  # type: ignore[arg-type]


def index_record(name: str, version: str, apk: bytes, control: bytes, **fields: object):
    """The APKINDEX record of `apk` whose control member is `control` (C: and S: of these
    very bytes, whatever state they are in)."""
    from builder.apk.model import Package
    from builder.util.checksums import q1

    pkg = Package(name=name, version=version, arch="x86_64", size=len(apk),
                  checksum=q1(hashlib.sha1(control).digest()), origin=name, license="MIT")
    for k, v in fields.items():
        setattr(pkg, k, v)
    return pkg


def hostile_repo(tmp: Path, apks: dict[str, bytes], key: tuple[bytes, bytes],
                 packages: list[str], records: list | None = None,
                 index: bytes | None = None) -> Path:
    """A local repository under `tmp/repo` (x86_64) holding `apks` (file name -> bytes),
    whose signed APKINDEX lists `records` (default: each package's own record, depends
    kept), or is `index` as given; an apko.yaml installing `packages`. Returns the config."""
    from builder.apk.index import index_record_from_apk, write_index
    from builder.apk.package import read_apk

    repo = tmp / "repo" / "x86_64"
    repo.mkdir(parents=True, exist_ok=True)
    for old in repo.iterdir():
        old.unlink()
    if records is None:
        records = [index_record_from_apk(read_apk(data, n), len(data)) for n, data in
                   apks.items()]
    for fname, data in apks.items():
        (repo / fname).write_bytes(data)
    (repo / "APKINDEX.tar.gz").write_bytes(
        index if index is not None else write_index(records, key[0], "local.rsa.pub"))
    (tmp / "local.rsa.pub").write_bytes(key[1])
    cfg = tmp / "apko.yaml"
    cfg.write_text(f"contents:\n  keyring: [{tmp / 'local.rsa.pub'}]\n"
                   f"  repositories: [{tmp / 'repo'}]\n"
                   f"  packages: [{', '.join(packages)}]\n"
                   "archs: [x86_64]\n")
    return cfg


def tree_state(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple]:
    """path -> (kind, size, mtime_ns) of everything under `root` but the `skip` trees: what
    a refused build must leave as it was."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames + filenames:
            p = here / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_size,
                                             st.st_mtime_ns if not stat.S_ISDIR(st.st_mode)
                                             else 0)
    return out


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run `apkimage ARGV`, which must fail cleanly: exit 1 and exactly one stderr line
    `apkimage: error: ...` (no traceback); returns that line."""
    from builder.cli import main

    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1, err
    assert len(lines) == 1 and lines[0].startswith("apkimage: error: "), err
    return lines[0]


def layout_tree(out: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """The image tree of an OCI layout `apkimage build` wrote (one arch): every layer's
    entries applied in order, path -> (header, content)."""
    index = json.loads((out / "index.json").read_text())
    blobs = out / "blobs" / "sha256"

    def blob(digest: str) -> bytes:
        return (blobs / digest.split(":", 1)[1]).read_bytes()

    doc = json.loads(blob(index["manifests"][0]["digest"]))
    while "manifests" in doc:  # the image index -> the (one) image manifest
        doc = json.loads(blob(doc["manifests"][0]["digest"]))
    tree: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    for layer in doc["layers"]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layer["digest"])))) as tf:
            for ti in tf:
                f = tf.extractfile(ti) if ti.isreg() else None
                tree[ti.name.rstrip("/")] = (ti, f.read() if f else b"")
    return tree


# --------------------------------------------------------------------- faults and concurrency

# Small HTTP timeouts, retries and backoff (builder/repo/http.py): failure tests stay quick.
FAST_HTTP_ENV = {"APKIMAGE_HTTP_TIMEOUT": "0.5", "APKIMAGE_HTTP_RETRIES": "2",
                 "APKIMAGE_HTTP_BACKOFF": "0.05"}


def golden_http_config(path: Path, url: str, archs: tuple[str, ...] = ("x86_64", "aarch64"),
                       extra: str = "") -> Path:
    """An apko.yaml at `path` installing apko's golden fixture from the repository at `url`
    (a RepoServer of GOLDEN_REPO), with `extra` YAML appended."""
    path.write_text(f"contents:\n  keyring: [{GOLDEN / 'melange.rsa.pub'}]\n"
                    f"  repositories: [{url}]\n  packages: [replayout]\n"
                    f"entrypoint:\n  command: /bin/sh -l\narchs: [{', '.join(archs)}]\n{extra}")
    return path


def run_apkimage(*args: str | Path, env: dict[str, str] | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`apkimage ARGS` in a fresh process (stdout and stderr captured), with `env` added to
    the environment."""
    import sys

    return subprocess.run([sys.executable, "-m", "builder.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=REPO_ROOT)


def cache_contents(cache: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file of a cache but its verification stamps, lock
    files and temp files (what may differ between two caches holding the same content)."""
    out = {}
    for dirpath, _, names in os.walk(cache):
        for name in names:
            if name.endswith(".verified") or name.endswith(".lock") or name.startswith(".tmp-"):
                continue
            p = Path(dirpath) / name
            out[str(p.relative_to(cache))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(root: Path) -> list[str]:
    """Temp files (`.tmp-*`) and build work directories (`.*.work-*`) under `root`."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*")
                  if p.name.startswith(".tmp-") or ".work-" in p.name)


def checked_layout(out: Path) -> str:
    """The index digest an OCI layout's index.json names, after checking that every blob of
    the layout hashes to its name."""
    for blob in (out / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob
    return json.loads((out / "index.json").read_text())["manifests"][0]["digest"]


# ---------------------------------------------------------------------------- small worlds


def layered_variant(tmp: Path, config: Path, name: str, packages: list[str] | None = None,
                    budget: int | None = 5) -> Path:
    """`tmp/<name>.yaml`: `config` with other `packages` (when given) and, unless `budget`
    is None, `layering: {strategy: origin, budget: N}`."""
    doc = yaml.safe_load(config.read_text())
    if packages is not None:
        doc["contents"]["packages"] = packages
    if budget is not None:
        doc["layering"] = {"strategy": "origin", "budget": budget}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def small_world(tmp: Path, config: Path, images: int = 4) -> list[Path]:
    """Up to four overlapping images of `config`'s packages (all, base, tools, mid), each
    layered by origin with a budget above the origins (every origin keeps its own layer)."""
    every = yaml.safe_load(config.read_text())["contents"]["packages"]
    shapes = [("all", every), ("base", every[:3]), ("tools", every[2:]), ("mid", every[1:-1])]
    return [layered_variant(tmp, config, name, pkgs, budget=40)
            for name, pkgs in shapes[:images]]
