"""Faults and concurrency: nothing lost (README "Faults and concurrency").

Real `apkimage build` processes killed with SIGKILL inside fetch, expand and layer
(APKIMAGE_FAULT_KILL, builder/faults.py) and built again on the same cache; one flipped byte
in every kind of file the cache keeps, then a hot and an `--offline` build; four builds at
once on one cache; a cache on a full filesystem; a repository that answers 500, cuts bodies
short or hangs. Every case ends with the digests of a clean build and a cache holding what a
clean build's holds — or with one clear error line naming the file or URL at fault.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from perf.workloads import Workload
from tests.helpers import (
    FAST_HTTP_ENV,
    GOLDEN_REPO,
    REPO_ROOT,
    RepoServer,
    cache_contents,
    checked_layout,
    golden_http_config,
    leftovers,
    run_apkimage,
)


@pytest.fixture(scope="module")
def golden_server() -> Iterator[RepoServer]:
    """apko's golden repository over HTTP (so packages and indexes land in the cache)."""
    with RepoServer(GOLDEN_REPO) as srv:
        yield srv


def build_args(config: Path, out: Path, cache: Path, impl: str, *extra: str) -> list[str]:
    return ["build", str(config), "faults:test", str(out), "--cache-dir", str(cache),
            "--impl", impl, "--json", *extra]


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The failed build's one stderr line (exit 1, `apkimage: error: ...`)."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("apkimage: error: "), proc.stderr
    return lines[0]


def built(proc: subprocess.CompletedProcess[str], out: Path) -> dict:
    """The summary of a build that succeeded, its layout checked blob by blob."""
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert checked_layout(out) == summary["index_digest"]
    return summary


# ------------------------------------------------------------------------------- kill -9


def cache_counts(cache: Path) -> dict[str, int]:
    """How many packages, finished expansions and temp files a cache holds."""
    files = [p for p in cache.rglob("*") if p.is_file()]
    return {"packages": sum(p.name == "package.apk" for p in files),
            "expansions": sum(p.name == "expand.json" for p in files),
            "temps": sum(p.name.startswith(".tmp-") for p in files)}


# (impl, stage:n, extra flags, what the cache holds at the kill: packages, expansions)
KILLS = [
    ("fast", "fetch:1", (), {"packages": 0, "expansions": 0}),
    ("fast", "fetch:4", (), {"packages": 2, "expansions": 2}),  # arch 1 done, arch 2 fetching
    ("reference", "fetch:2", (), {"packages": 1, "expansions": 0}),
    ("stitched", "expand:1", (), {"packages": 2, "expansions": 0}),
    ("stitched", "expand:4", (), {"packages": 2, "expansions": 0}),  # data.tar + 2 JSONs in
    ("stitched", "expand:12", (), {"packages": 4, "expansions": 2}),  # arch 2 expanding
    ("fast", "layer:1", (), {"packages": 2, "expansions": 2}),
    ("stitched", "layer:1", (), {"packages": 2, "expansions": 2}),
    ("reference", "layer:1", (), {"packages": 2, "expansions": 0}),
    # with the layer cache: the key lookup's span ends, then the layer is written
    ("fast", "layer:2", ("--layer-cache",), {"packages": 2, "expansions": 2}),
    # ... and recorded after compress: killed between the blob and its record
    ("fast", "compress:2", ("--layer-cache",), {"packages": 2, "expansions": 2}),
]


@pytest.mark.slow  # ~2 s each: three build processes
@pytest.mark.parametrize(("impl", "point", "extra", "at_kill"), KILLS,
                         ids=[f"{k[0]}-{k[1]}{'-layer-cache' if k[2] else ''}" for k in KILLS])
def test_kill_9_then_build_again(golden_server: RepoServer, tmp_path: Path, impl: str,
                                 point: str, extra: tuple[str, ...],
                                 at_kill: dict[str, int]) -> None:
    config = golden_http_config(tmp_path / "apko.yaml", golden_server.url)
    clean = built(run_apkimage(*build_args(config, tmp_path / "clean", tmp_path / "clean-cache",
                                           impl, *extra)), tmp_path / "clean")
    cache, out = tmp_path / "cache", tmp_path / "out"
    killed = run_apkimage(*build_args(config, out, cache, impl, *extra),
                          env={"APKIMAGE_FAULT_KILL": point})
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    assert not out.exists(), "a killed build left an output"
    counts = cache_counts(cache)
    assert {k: counts[k] for k in at_kill} == at_kill, counts  # killed where it was meant to
    assert leftovers(tmp_path), "the kill left nothing half-done: not the point of the test"
    time.sleep(1.1)  # leftovers count as a dead writer's once untouched for a second
    again = built(run_apkimage(*build_args(config, out, cache, impl, *extra)), out)
    assert again == clean
    assert cache_contents(cache) == cache_contents(tmp_path / "clean-cache")
    assert leftovers(tmp_path) == [], "a killed build's temp files or work directory stayed"


# ------------------------------------------------------------------- one flipped byte


def _first(cache: Path, pattern: str) -> Path:
    found = sorted(p for p in (cache / "v1").glob(pattern) if p.is_file())
    assert found, f"the warm cache holds no {pattern}"
    return found[0]


def _middle(path: Path) -> int:
    return path.stat().st_size // 2


def _in_value(key: str) -> object:
    """Where a JSON file holds the value of `key`: a few bytes into it."""
    def at(path: Path) -> int:
        raw = path.read_bytes()
        pos = raw.index(f'"{key}":'.encode()) + len(key) + 3
        while raw[pos:pos + 1] in (b" ", b'"'):
            pos += 1
        return pos + 8 if raw[pos:pos + 7] == b"sha256:" else pos + 1
    return at


def _section(name: str) -> object:
    """The middle of one section of an .apk (signature, control, data)."""
    def at(path: Path) -> int:
        from builder.apk.layout import read_layout

        lay = read_layout(path)
        start, end = {"signature": (0, lay.control_start),
                      "control": (lay.control_start, lay.control_end),
                      "data": (lay.control_end, lay.size)}[name]
        return (start + end) // 2
    return at


def _index_blob(cache: Path) -> Path:
    record = json.loads(_first(cache, "index/*/*.json").read_text())
    return cache / "v1" / "blobs" / "sha256" / record["sha256"]


def _layer_blob(cache: Path) -> Path:
    record = json.loads(_first(cache, "layers/[0-9a-f][0-9a-f]/*.json").read_text())
    return cache / "v1" / "blobs" / "sha256" / record["digest"].removeprefix("sha256:")


def _in_package(name: str) -> object:
    return lambda cache: _first(cache, f"apk/*/*/{name}")


# kind -> (where the file is, where in it the byte is, the build that reads it, fetched:
# whether it came from the repository, so that an offline build cannot make it again)
FLIPS = {
    "package-control": (_in_package("package.apk"), _section("control"), "solved", True),
    "package-data": (_in_package("package.apk"), _section("data"), "solved", True),
    # the signature section is checked against a lockfile only (no index pins it)
    "package-signature": (_in_package("package.apk"), _section("signature"), "locked", True),
    "data.tar": (_in_package("data.tar"), _middle, "solved", False),
    "tarindex.json": (_in_package("tarindex.json"), _middle, "solved", False),
    "control.json": (_in_package("control.json"), _middle, "solved", False),
    "blocks.json": (_in_package("blocks.json"), _middle, "solved", False),
    "expand.json": (_in_package("expand.json"), _middle, "solved", False),
    "expand.json-crc32": (_in_package("expand.json"), _in_value("crc32"), "solved", False),
    "apk.verified": (_in_package("apk.verified"), _middle, "solved", False),
    "data.tar.verified": (_in_package("data.tar.verified"), _middle, "solved", False),
    "index-record": (lambda c: _first(c, "index/*/*.json"), _middle, "solved", True),
    "index-record-sha256": (lambda c: _first(c, "index/*/*.json"), _in_value("sha256"),
                            "solved", True),
    "index-blob": (_index_blob, _middle, "solved", True),
    "index-memo": (lambda c: _first(c, "index-parsed/*/*.json"), _middle, "solved", False),
    "signature-memo": (lambda c: _first(c, "signature-verified/*/*"), _middle, "locked",
                       False),
    "layer-record": (lambda c: _first(c, "layers/[0-9a-f][0-9a-f]/*.json"), _middle, "solved",
                     False),
    "layer-record-diff_id": (lambda c: _first(c, "layers/[0-9a-f][0-9a-f]/*.json"),
                             _in_value("diff_id"), "solved", False),
    "layer-record-media_type": (lambda c: _first(c, "layers/[0-9a-f][0-9a-f]/*.json"),
                                _in_value("media_type"), "solved", False),
    "layer-blob": (_layer_blob, _middle, "solved", False),
    "layer-stamp": (lambda c: _first(c, "layers/stamps/*.verified"), _middle, "solved", False),
}
# Not flipped: `.expand.lock` (an empty file, only ever locked) and temp files (never read).


class Builds:
    """In-process builds of the golden fixture from one RepoServer, all into fresh outputs."""

    def __init__(self, root: Path, server_url: str) -> None:
        from builder.cli import main

        self.main = main
        self.root = root
        self.config = golden_http_config(root / "apko.yaml", server_url, archs=("x86_64",))
        self.lock = root / "apko.lock.json"
        self.n = 0

    def run(self, cache: Path, which: str, *extra: str,
            layer_cache: bool = True) -> tuple[int, dict | None, Path]:
        """(exit status, summary, output) of a `which` (solved | locked) stitched build, with
        the layer cache or without it (then the layer is made from the expansions' files)."""
        self.n += 1
        out, spans = self.root / f"out-{self.n}", self.root / f"spans-{self.n}.json"
        lock = ("--lockfile", str(self.lock)) if which == "locked" else ()
        reuse = ("--layer-cache",) if layer_cache else ()
        rc = self.main(["build", str(self.config), "faults:test", str(out), "--cache-dir",
                        str(cache), "--impl", "stitched", "--spans", str(spans), *reuse,
                        *lock, *extra])
        summary = json.loads(spans.read_text())["image"] if rc == 0 else None
        if rc == 0:
            assert checked_layout(out) == summary["index_digest"]
        return rc, summary, out


@pytest.fixture(scope="module")
def warm(golden_server: RepoServer, tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, object]:
    """A cache holding every kind of file (solved and lockfile stitched builds with the
    layer cache, stamps written), and the clean builds' summaries."""
    from builder.cli import main
    from builder.repo import stamp

    root = tmp_path_factory.mktemp("flips")
    builds = Builds(root, golden_server.url)
    cache = root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stamp, "SETTLE_NS", 0)  # stamps for files made a moment ago
        assert main(["lock", str(builds.config), "-o", str(builds.lock), "--cache-dir",
                     str(root / "lock-cache")]) == 0
        clean = {}
        for which in ("solved", "locked"):
            for _ in range(2):  # cold, then hot (which writes the stamps)
                rc, clean[which], _ = builds.run(cache, which)
                assert rc == 0
    return {"cache": cache, "clean": clean, "server": golden_server.url}


def _stamp_doc(raw: bytes) -> dict:
    """A stamp's content but the moment of its check."""
    doc = json.loads(raw)
    doc.pop("checked_ns")
    return doc


@pytest.mark.parametrize("mode", ["hot", "offline"])
@pytest.mark.parametrize("kind", sorted(FLIPS))
def test_flipped_byte(kind: str, mode: str, warm: dict, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                      ) -> None:
    from builder.repo import stamp

    monkeypatch.setattr(stamp, "SETTLE_NS", 0)
    locate, offset_of, which, fetched = FLIPS[kind]
    builds = Builds(tmp_path, warm["server"])
    shutil.copy(warm["cache"].parent / "apko.lock.json", builds.lock)
    cache = tmp_path / "cache"
    shutil.copytree(warm["cache"], cache)
    rc, summary, _ = builds.run(cache, which)  # a copy's stamps name other inodes: stamp anew
    assert (rc, summary) == (0, warm["clean"][which])
    target = locate(cache)
    before, contents = target.read_bytes(), cache_contents(cache)
    at = offset_of(target)
    damaged = bytearray(before)
    damaged[at] ^= 0x01
    target.write_bytes(bytes(damaged))
    capsys.readouterr()

    # The layer cache is used when the damaged file is one of its own; otherwise it is left
    # out, so that the layer is made from (and reads) every file of the expansions.
    rc, summary, out = builds.run(cache, which, *(["--offline"] if mode == "offline" else []),
                                  layer_cache=kind.startswith("layer-"))
    err = capsys.readouterr().err
    if mode == "offline" and fetched:  # nothing to make it from: refused, naming the file
        assert rc == 1, err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("apkimage: error: offline: "), err
        assert str(target) in lines[0], lines[0]
        assert "corrupt" in lines[0] or "does not match" in lines[0], lines[0]
        assert not out.exists()
        assert target.read_bytes() == bytes(damaged)  # left for the next online build
        return
    assert rc == 0, err
    assert summary == warm["clean"][which], "a damaged cache file changed the image"
    if target.name.endswith(".verified"):  # a stamp: checked in full again and rewritten
        assert _stamp_doc(target.read_bytes()) == _stamp_doc(before)
    else:  # fetched again (hot) or made again from what the cache holds
        assert target.read_bytes() == before
    assert cache_contents(cache) == contents
    assert leftovers(cache) == []



# ---------------------------------------------------------- a repository that misbehaves

INDEX = "/x86_64/APKINDEX.tar.gz"
PACKAGE = "/x86_64/replayout-1.0.0-r0.apk"
# fault -> words the error says (the URL always comes first)
REPO_FAULTS = {
    500: "HTTP 500 Internal Server Error (3 attempts)",
    "cut": "download failed after 3 attempts: the body broke off after",
    "stall": "(no data for 0.5 s)",
    "hang": "no answer within 0.5 s (3 attempts)",
}
# a stall or a hang waits out the timeouts: ~2 s a test
FAULTS = [500, "cut", "short", *(pytest.param(f, marks=pytest.mark.slow)
                                 for f in ("stall", "hang"))]
SHORT_WORDS = {INDEX: "none with a Content-Length",
               PACKAGE: "download failed after 3 attempts: got 1480 of the index's S:2961"}


@pytest.fixture()
def flaky_server(tmp_path: Path) -> Iterator[RepoServer]:
    with RepoServer(GOLDEN_REPO) as srv:
        srv.hang_s = 10.0
        yield srv


def _requests_of(srv: RepoServer, path: str) -> list[float]:
    with srv.lock:
        return [t for t, p in srv.times if p == path]


@pytest.mark.parametrize("path", [INDEX, PACKAGE], ids=["index", "package"])
@pytest.mark.parametrize("fault", FAULTS)
def test_repository_fault_is_retried_then_named(flaky_server: RepoServer, tmp_path: Path,
                                                fault: int | str, path: str) -> None:
    config = golden_http_config(tmp_path / "apko.yaml", flaky_server.url, archs=("x86_64",))
    cache, out = tmp_path / "cache", tmp_path / "out"
    flaky_server.fail = {path: [fault] * 10}
    start = time.monotonic()
    line = one_error_line(run_apkimage(*build_args(config, out, cache, "fast"),
                                       env=FAST_HTTP_ENV))
    elapsed = time.monotonic() - start
    assert line.startswith(f"apkimage: error: {flaky_server.url}{path}: "), line
    assert (SHORT_WORDS[path] if fault == "short" else REPO_FAULTS[fault]) in line, line
    times = _requests_of(flaky_server, path)
    assert len(times) == 3, times  # the first attempt and APKIMAGE_HTTP_RETRIES=2 more
    assert times[2] - times[1] >= 0.05  # backed off (urllib3 retries the first at once)
    assert elapsed < 15, elapsed  # three 0.5 s timeouts at most, not the 30 s default
    assert not out.exists()
    # the index failing, nothing was fetched; the package failing, only the other one
    assert cache_counts(cache) == {"packages": int(path == PACKAGE), "expansions": 0,
                                   "temps": 0}
    if path == INDEX:
        assert not (cache / "v1" / "index").exists()


@pytest.mark.parametrize("path", [INDEX, PACKAGE], ids=["index", "package"])
@pytest.mark.parametrize("fault", [503, *FAULTS[1:]])
def test_repository_fault_that_passes_is_survived(flaky_server: RepoServer, tmp_path: Path,
                                                  fault: int | str, path: str) -> None:
    config = golden_http_config(tmp_path / "apko.yaml", flaky_server.url, archs=("x86_64",))
    clean = built(run_apkimage(*build_args(config, tmp_path / "clean", tmp_path / "clean-cache",
                                           "fast")), tmp_path / "clean")
    flaky_server.fail = {path: [fault, fault]}  # twice, then the file
    again = built(run_apkimage(*build_args(config, tmp_path / "out", tmp_path / "cache",
                                           "fast"), env=FAST_HTTP_ENV), tmp_path / "out")
    assert again == clean
    assert len(_requests_of(flaky_server, path)) == 4  # 1 clean, then 2 failures and 1 good
    assert cache_contents(tmp_path / "cache") == cache_contents(tmp_path / "clean-cache")


def test_malformed_http_settings_are_named(golden_server: RepoServer, tmp_path: Path) -> None:
    config = golden_http_config(tmp_path / "apko.yaml", golden_server.url, archs=("x86_64",))
    line = one_error_line(run_apkimage(*build_args(config, tmp_path / "out", tmp_path / "c",
                                                   "fast"), env={"APKIMAGE_HTTP_TIMEOUT": "0"}))
    assert "APKIMAGE_HTTP_TIMEOUT='0': expected a number of seconds above 0" in line


# ---------------------------------------------------------------- builds side by side


@pytest.fixture(scope="module")
def small_server(small_workload: Workload) -> Iterator[RepoServer]:
    with RepoServer(small_workload.repo_dir) as srv:
        yield srv


def small_config(path: Path, workload: Workload, url: str,
                 packages: list[str] | None = None) -> Path:
    """The `small` workload's config, from the repository at `url` (and only `packages`)."""
    doc = yaml.safe_load(workload.config_path.read_text())
    doc["contents"]["repositories"] = [url]
    if packages is not None:
        doc["contents"]["packages"] = packages
    path.write_text(yaml.safe_dump(doc))
    return path


SMALL_SUBSETS = [None, ["synth-baselayout", "busybox"],
                 ["synth-baselayout", "git", "openssh-client"], ["ca-certificates-bundle", "go"]]


@pytest.mark.slow  # ~15 s: eight cold builds of the small workload
@pytest.mark.parametrize("variety", ["same", "different"])
def test_four_builds_at_once_share_one_cache(small_workload: Workload,
                                             small_server: RepoServer, tmp_path: Path,
                                             variety: str) -> None:
    if variety == "same":
        config = small_config(tmp_path / "apko.yaml", small_workload, small_server.url)
        jobs = [(config, "stitched")] * 4
    else:
        jobs = [(small_config(tmp_path / f"apko-{i}.yaml", small_workload, small_server.url,
                              subset), impl)
                for i, (subset, impl) in enumerate(zip(SMALL_SUBSETS, ["fast", "stitched",
                                                                       "reference", "fast"],
                                                       strict=True))]
    serial: list[dict] = []
    merged: dict[str, set[str]] = {}  # path -> the contents the serial caches hold there
    for i, (config, impl) in enumerate(jobs):  # each alone, in a cache of its own
        cache = tmp_path / f"serial-cache-{i}"
        out = tmp_path / f"serial-{i}"
        serial.append(built(run_apkimage(*build_args(config, out, cache, impl,
                                                     "--layer-cache")), out))
        for name, digest in cache_contents(cache).items():
            merged.setdefault(name, set()).add(digest)
    # Only an expansion's manifest may differ: one made for a stitched build lists the
    # block index too (and a later stitched build adds it to one made without).
    assert all(len(v) == 1 or k.endswith("/expand.json") for k, v in merged.items())
    shared = tmp_path / "shared-cache"
    procs = [subprocess.Popen([sys.executable, "-m", "builder.cli",
                               *build_args(config, tmp_path / f"together-{i}", shared, impl,
                                           "--layer-cache")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO_ROOT)
             for i, (config, impl) in enumerate(jobs)]
    results = []
    for i, proc in enumerate(procs):
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
        assert stderr == "", stderr  # no warning: nothing found damaged or stale
        results.append(json.loads(stdout))
        assert checked_layout(tmp_path / f"together-{i}") == results[-1]["index_digest"]
    assert results == serial
    together = cache_contents(shared)
    assert together.keys() == merged.keys()
    assert all(together[k] in merged[k] for k in together), "a file no serial build made"
    assert leftovers(tmp_path) == []
    for i, (config, impl) in enumerate(jobs):  # and the shared cache serves each again
        proc = run_apkimage(*build_args(config, tmp_path / f"hot-{i}", shared, impl,
                                        "--layer-cache"))
        assert built(proc, tmp_path / f"hot-{i}") == serial[i]
        assert proc.stderr == ""


# ----------------------------------------------------------------------- a full disk


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only: skips otherwise)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.slow  # ~6 s: three cold builds of the small workload
@pytest.mark.parametrize(("size", "where"), [
    ("64k", "apk"),  # full while fetching (6 MB of packages)
    ("8m", "apk"),  # while expanding (the packages are in, 18 MB of data tars are not)
    ("26m", "blobs"),  # while recording the layer in the layer cache (6 MB)
])
def test_full_disk_is_named_and_leaves_no_damage(small_workload: Workload,
                                                 small_server: RepoServer, tmp_path: Path,
                                                 size: str, where: str) -> None:
    config = small_config(tmp_path / "apko.yaml", small_workload, small_server.url)
    args = ("fast", "--layer-cache")
    clean = built(run_apkimage(*build_args(config, tmp_path / "clean", tmp_path / "clean-cache",
                                           *args)), tmp_path / "clean")
    clean_contents = cache_contents(tmp_path / "clean-cache")
    with tmpfs(tmp_path / "cache", size) as cache:
        line = one_error_line(run_apkimage(*build_args(config, tmp_path / "out", cache,
                                                       *args)))
        assert line.startswith(f"apkimage: error: cache {cache}/v1/{where}/"), line
        assert line.endswith(": No space left on device"), line
        assert ".tmp-" not in line  # the entry's directory, not a temp file that is gone
        assert not (tmp_path / "out").exists()
        assert leftovers(tmp_path) == []
        partial = cache_contents(cache)
        assert partial, "the disk filled before anything was stored: not the point"
        counts = cache_counts(cache)
        assert (counts["packages"] == 48) == (size != "64k"), counts
        assert (counts["expansions"] == 48) == (size == "26m"), counts
        # what was stored is whole: each file is the clean cache's file of that name
        assert {k: clean_contents.get(k) for k in partial} == partial
        subprocess.run(["mount", "-o", "remount,size=64m", str(cache)], check=True)
        again = built(run_apkimage(*build_args(config, tmp_path / "out", cache, *args)),
                      tmp_path / "out")
        assert again == clean
        assert cache_contents(cache) == clean_contents
