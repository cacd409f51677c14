"""Scenarios: how the world looks when a measured build starts, set up AND checked.

- cold: empty cache dir (checked empty right before the run), repository served over HTTP by
  a local RepoServer (optionally shaped); the server log must show the packages being fetched.
- hot: cache warmed by a previous build; before the run the cache must hold an entry for every
  package the warm-up fetched; during the run the server must see no package download.
- offline: cache warmed as for hot, then the repository server is stopped and replaced, on the
  same port, by a server of an empty directory that only logs; the build runs with --offline
  and must succeed, and that log must stay empty (nothing was asked).
- publish: cache warm, a local `docker-registry` started; the image is pushed under a fresh
  repository name per run and the registry must serve the pushed index digest afterwards.

A broken setup raises ScenarioError, which stops the whole job: a mislabelled number is worse
than no number.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder.apk.model import Package, parse_index_text
from builder.errors import ApkImageError

SCENARIOS = ("cold", "hot", "offline", "publish", "cold-lock", "hot-lock")


class ScenarioError(ApkImageError):
    """A scenario's preconditions or postconditions do not hold."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def preferred_repo_port(workload_name: str) -> int:
    """The port a workload's repository is served on: fixed per workload (20000-29999, below
    Linux's ephemeral range), because the URL lands in the image (`etc/apk/repositories`,
    `etc/apko.json`) and so in its diffIDs: every scenario, job and commit then builds the
    same image."""
    return 20000 + int(hashlib.sha256(workload_name.encode()).hexdigest(), 16) % 10000


@contextlib.contextmanager
def repo_port(workload_name: str) -> Iterator[tuple[int, bool]]:
    """(port, is_preferred) for one job, held for the job's duration: the workload's preferred
    port when no other job holds it (a lock file per port: the job's servers close and reopen
    it between scenarios) and it can be bound; else a free one (images are then comparable
    within this job only)."""
    port = preferred_repo_port(workload_name)
    lock = open(Path(tempfile.gettempdir()) / f"apkperf-repo-port-{port}.lock", "a")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield free_port(), False
            return
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                bindable = True
            except OSError:
                bindable = False
        yield (port, True) if bindable else (free_port(), False)
    finally:
        lock.close()


def cache_entries(cache_dir: Path) -> list[Path]:
    if not cache_dir.exists():
        return []
    return sorted(p for p in cache_dir.rglob("*"))


def check_cache_empty(cache_dir: Path) -> None:
    entries = cache_entries(cache_dir)
    if not cache_dir.is_dir():
        raise ScenarioError(f"cold scenario: cache dir {cache_dir} does not exist")
    if entries:
        raise ScenarioError(f"cold scenario: cache dir {cache_dir} is not empty "
                            f"({len(entries)} entries, e.g. {entries[0].relative_to(cache_dir)})")


def read_index(repo_dir: Path, arch: str) -> list[Package]:
    """Packages of `<repo>/<arch>/APKINDEX.tar.gz` (signature segment skipped)."""
    path = repo_dir / arch / "APKINDEX.tar.gz"
    try:
        with tarfile.open(fileobj=io.BytesIO(path.read_bytes()), mode="r:gz") as tf:
            for member in tf:
                if member.name == "APKINDEX":
                    data = tf.extractfile(member)
                    assert data is not None
                    return parse_index_text(data.read().decode(), source=str(path))
    except (OSError, tarfile.TarError) as exc:
        raise ScenarioError(f"cannot read {path}: {exc}") from exc
    raise ScenarioError(f"{path}: no APKINDEX member")


def _package_ids(pkg: Package) -> list[str]:
    ids = [f"{pkg.name}-{pkg.version}"]
    if pkg.checksum.startswith("Q1"):
        raw = base64.b64decode(pkg.checksum[2:])
        ids += [raw.hex(), pkg.checksum[2:].replace("/", "_").replace("+", "-"), pkg.checksum]
    if pkg.datahash:
        ids.append(pkg.datahash)
    return ids


def missing_from_cache(cache_dir: Path, packages: list[Package]) -> list[str]:
    """Names of packages with no cache entry. An entry is a file whose path under the cache
    holds a content key of the package (SHA-1 of the control section in hex or base64, the
    datahash, or name-version) or, failing that, a small cached file whose SHA-1 is the
    control checksum."""
    paths = [str(p.relative_to(cache_dir)) for p in cache_entries(cache_dir) if p.is_file()]
    blob = "\n".join(paths)
    missing = [p for p in packages if not any(i in blob for i in _package_ids(p))]
    if not missing:
        return []
    sha1s: set[str] = set()
    for p in cache_entries(cache_dir):
        if p.is_file() and p.stat().st_size < (1 << 20):
            sha1s.add(hashlib.sha1(p.read_bytes()).hexdigest())
    still = []
    for pkg in missing:
        ids = _package_ids(pkg)
        if not (len(ids) > 1 and ids[1] in sha1s):
            still.append(f"{pkg.name}-{pkg.version}")
    return still


def apk_requests(requests: list[dict]) -> list[str]:
    """Paths (URL-unquoted: `libstdc%2B%2B` -> `libstdc++`) of the `.apk` files requested."""
    return [urllib.parse.unquote(str(r.get("path", ""))) for r in requests
            if str(r.get("path", "")).endswith(".apk")]


def packages_by_filename(packages: list[Package]) -> dict[str, Package]:
    return {f"{p.name}-{p.version}.apk": p for p in packages}


def write_config(workload: Any, repo_url: str, out: Path) -> Path:
    """Copy of the workload's apko YAML with `contents.repositories` pointing at `repo_url`
    and relative keyring paths made absolute."""
    src = Path(workload.config_path)
    doc = yaml.safe_load(src.read_text()) or {}
    contents = doc.setdefault("contents", {})
    contents["repositories"] = [repo_url]
    keyring = []
    for k in contents.get("keyring") or []:
        kp = Path(k)
        keyring.append(str(kp if kp.is_absolute() or "://" in k else (src.parent / kp).resolve()))
    if keyring:
        contents["keyring"] = keyring
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


# --------------------------------------------------------------------------- registry


class LocalRegistry:
    """Debian's `docker-registry` on 127.0.0.1:<free port>, storage in a temp dir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> LocalRegistry:
        exe = shutil.which("docker-registry")
        if exe is None:
            raise ScenarioError("publish scenario needs `docker-registry` (make tools)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "registry.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.workdir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
        )
        log = open(self.workdir / "registry.log", "wb")
        self.proc = subprocess.Popen([exe, "serve", str(cfg)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ScenarioError(f"docker-registry exited early, see {self.workdir}/"
                                    "registry.log")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.__exit__(None, None, None)
        raise ScenarioError(f"docker-registry on {self.host} did not answer /v2/ in 15 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def manifest_digest(self, repo: str, tag: str) -> str | None:
        req = urllib.request.Request(
            f"http://{self.host}/v2/{repo}/manifests/{tag}", method="HEAD",
            headers={"Accept": ", ".join([
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
                "application/vnd.docker.distribution.manifest.v2+json"])})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ScenarioError(f"registry {self.host}: HEAD {repo}:{tag} -> {exc.code}") from exc


# --------------------------------------------------------------------------- scenarios


@dataclass
class SideState:
    """Per (scenario, side) state: each side keeps its own cache (formats may differ
    between commits)."""

    label: str
    dir: Path
    cache_dir: Path
    run_count: int = 0
    expected_apks: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass
class RunSpec:
    """What the runner needs for one build: subcommand arguments after `apkimage`, and
    optionally a command the build runs under and environment it gets."""

    args: list[str]
    check_token: Any = None
    prefix: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


NETGUARD_DIR = Path(__file__).resolve().parent / "netguard"


def network_seal() -> list[str]:
    """The command that runs a build with no network at all: a network namespace of its own
    (as root `unshare -n`; unprivileged, inside a user namespace too). [] when neither works
    here: the offline scenario then relies on its tripwire server and the audit log."""
    for cmd in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            if subprocess.run([*cmd, "true"], capture_output=True, timeout=10).returncode == 0:
                return cmd
        except (OSError, subprocess.TimeoutExpired):
            continue
    return []


class Scenario:
    name = ""
    warm_cache = False  # prepare_side runs an unmeasured build that fills the cache

    def __init__(self, workload: Any, workdir: Path, *, latency_ms: int = 0,
                 bandwidth_mbit: float = 0, tls: bool = False, repo_port: int = 0) -> None:
        self.workload = workload
        self.repo_port = repo_port  # 0: any free port (the image then names that port)
        self.workdir = workdir
        self.latency_ms = latency_ms
        self.bandwidth_mbit = bandwidth_mbit
        self.tls = tls
        self.server: Any = None
        self.config_path = workdir / "config.yaml"
        self._packages: list[Package] | None = None

    # lifecycle ------------------------------------------------------------
    def __enter__(self) -> Scenario:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server = self._start_server(Path(self.workload.repo_dir), port=self.repo_port,
                                         latency_ms=self.latency_ms,
                                         bandwidth_mbit=self.bandwidth_mbit)
        write_config(self.workload, self.server.url, self.config_path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.__exit__(None, None, None)
            self.server = None

    def _start_server(self, directory: Path, **kw: Any) -> Any:
        from perf.serve import RepoServer

        srv = RepoServer(directory, tls=self.tls, **kw)
        srv.__enter__()
        return srv

    @property
    def packages(self) -> list[Package]:
        if self._packages is None:
            self._packages = read_index(Path(self.workload.repo_dir), self.workload.arch)
        return self._packages

    def side_state(self, label: str) -> SideState:
        d = self.workdir / _slug(label)
        return SideState(label, d, d / "cache")

    def common_args(self, st: SideState) -> list[str]:
        args = ["--cache-dir", str(st.cache_dir)]
        ca = getattr(self.server, "ca_path", None) or getattr(self.server, "ca_file", None)
        if self.tls and ca:
            args += ["--ca-file", str(ca)]
        return args

    def build_args(self, st: SideState, out: Path, spans: Path, impl: str,
                   extra: list[str] | None = None) -> list[str]:
        tag = f"apkperf/{_slug(self.workload.name)}:latest"
        return ["build", str(self.config_path), tag, str(out), "--impl", impl,
                "--spans", str(spans), *self.common_args(st), *(extra or [])]

    def requests(self) -> list[dict]:
        return list(self.server.requests()) if self.server is not None else []

    # hooks -----------------------------------------------------------------
    def prepare_side(self, st: SideState) -> None:
        """Called once per side before any run (after the side's warm-up build, if any)."""
        st.dir.mkdir(parents=True, exist_ok=True)
        st.cache_dir.mkdir(parents=True, exist_ok=True)

    def after_warm(self, st: SideState, reqs: list[dict]) -> None:
        st.expected_apks = sorted(set(apk_requests(reqs)))
        if not st.expected_apks:
            raise ScenarioError(f"{self.name}: the warm-up build of {st.label} downloaded no "
                                f"package from {self.server.url}; the cache cannot be warm")

    def before_run(self, st: SideState, impl: str, out: Path, spans: Path) -> RunSpec:
        raise NotImplementedError

    def after_run(self, st: SideState, spec: RunSpec, spans_doc: dict) -> None:
        raise NotImplementedError

    def after_failure(self, st: SideState, spec: RunSpec) -> None:
        """Called when the build exited non-zero, before the runner reports that: a scenario
        whose setup explains the failure raises its own ScenarioError."""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:60]


class ColdScenario(Scenario):
    name = "cold"

    def reset_cache(self, st: SideState) -> None:
        if st.cache_dir.exists():
            shutil.rmtree(st.cache_dir)
        st.cache_dir.mkdir(parents=True)

    def before_run(self, st: SideState, impl: str, out: Path, spans: Path) -> RunSpec:
        self.reset_cache(st)
        check_cache_empty(st.cache_dir)
        return RunSpec(self.build_args(st, out, spans, impl), len(self.requests()))

    def after_run(self, st: SideState, spec: RunSpec, spans_doc: dict) -> None:
        fetched = apk_requests(self.requests()[spec.check_token:])
        if not fetched:
            raise ScenarioError(f"cold run of {st.label} fetched no package from "
                                f"{self.server.url}: it was not cold")


class HotScenario(Scenario):
    name = "hot"
    warm_cache = True

    def check_warm(self, st: SideState) -> None:
        by_arch: dict[str, dict[str, Package]] = {}
        wanted = []
        for path in st.expected_apks:
            parts = path.strip("/").split("/")
            arch = parts[-2] if len(parts) >= 2 else self.workload.arch
            if arch not in by_arch:
                by_arch[arch] = packages_by_filename(read_index(Path(self.workload.repo_dir),
                                                                arch))
            pkg = by_arch[arch].get(parts[-1])
            if pkg is None:
                raise ScenarioError(f"{self.name}: warm-up fetched {path}, which is not in the "
                                    "workload's APKINDEX")
            wanted.append(pkg)
        if not wanted:
            raise ScenarioError(f"{self.name}: no warm-up package list for {st.label}")
        missing = missing_from_cache(st.cache_dir, wanted)
        if missing:
            raise ScenarioError(f"{self.name}: cache {st.cache_dir} has no entry for "
                                f"{len(missing)} package(s): {', '.join(missing[:5])}")

    def before_run(self, st: SideState, impl: str, out: Path, spans: Path) -> RunSpec:
        self.check_warm(st)
        return RunSpec(self.build_args(st, out, spans, impl), len(self.requests()))

    def after_run(self, st: SideState, spec: RunSpec, spans_doc: dict) -> None:
        fetched = apk_requests(self.requests()[spec.check_token:])
        if fetched:
            raise ScenarioError(f"hot run of {st.label} downloaded {len(fetched)} package(s) "
                                f"(e.g. {fetched[0]}): the cache was not hot")


class OfflineScenario(HotScenario):
    """Offline builds are sealed: each runs in a network namespace of its own (network_seal)
    with an audit hook logging any resolve or connect (perf/netguard); any entry in that log,
    or any request reaching the tripwire server on the repository's port, fails the run."""

    name = "offline"

    def __enter__(self) -> Scenario:
        super().__enter__()
        self._port = self.server.port
        self._online = True
        self.seal = network_seal()
        return self

    def go_offline(self) -> None:
        """Stop the repository and put a tripwire (a server of an empty dir) on its port."""
        if not self._online:
            return
        self.server.__exit__(None, None, None)
        empty = self.workdir / "tripwire-empty"
        empty.mkdir(parents=True, exist_ok=True)
        self.server = self._start_server(empty, port=self._port)
        self._online = False

    def before_run(self, st: SideState, impl: str, out: Path, spans: Path) -> RunSpec:
        self.go_offline()
        self.check_warm(st)
        args = self.build_args(st, out, spans, impl, ["--offline"])
        st.run_count += 1
        net_log = st.dir / f"network-{st.run_count}.log"
        net_log.unlink(missing_ok=True)
        env = {"PYTHONPATH": str(NETGUARD_DIR), "APKPERF_NET_LOG": str(net_log)}
        return RunSpec(args, (len(self.requests()), net_log), prefix=self.seal, env=env)

    def check_network(self, st: SideState, spec: RunSpec) -> None:
        n0, net_log = spec.check_token
        try:
            tried = net_log.read_text().splitlines()
        except FileNotFoundError:
            tried = []
        if tried:
            raise ScenarioError(f"offline run of {st.label} tried the network {len(tried)} "
                                f"time(s): {tried[0]}" + (f" (and {len(tried) - 1} more, see "
                                f"{net_log})" if len(tried) > 1 else ""))
        asked = self.requests()[n0:]
        if asked:
            raise ScenarioError(f"offline run of {st.label} sent {len(asked)} request(s) to the "
                                f"repository (e.g. {asked[0].get('method')} "
                                f"{asked[0].get('path')})")

    def after_run(self, st: SideState, spec: RunSpec, spans_doc: dict) -> None:
        self.check_network(st, spec)

    def after_failure(self, st: SideState, spec: RunSpec) -> None:
        self.check_network(st, spec)


class PublishScenario(HotScenario):
    name = "publish"

    def __enter__(self) -> Scenario:
        super().__enter__()
        self.registry = LocalRegistry(self.workdir / "registry")
        try:
            self.registry.__enter__()
        except BaseException:
            super().__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.registry.__exit__(None, None, None)
        super().__exit__(*exc)

    def before_run(self, st: SideState, impl: str, out: Path, spans: Path) -> RunSpec:
        self.check_warm(st)
        st.run_count += 1
        repo = f"apkperf/{_slug(self.workload.name)}-{_slug(st.label)}-{st.run_count}".lower()
        if self.registry.manifest_digest(repo, "latest") is not None:
            raise ScenarioError(f"publish: {self.registry.host}/{repo}:latest already exists")
        ref = f"{self.registry.host}/{repo}:latest"
        args = ["publish", str(self.config_path), ref, "--impl", impl, "--spans", str(spans),
                *self.common_args(st)]
        return RunSpec(args, (repo, len(self.requests())))

    def after_run(self, st: SideState, spec: RunSpec, spans_doc: dict) -> None:
        repo, n0 = spec.check_token
        fetched = apk_requests(self.requests()[n0:])
        if fetched:
            raise ScenarioError(f"publish run of {st.label} downloaded packages: cache not hot")
        got = self.registry.manifest_digest(repo, "latest")
        want = (spans_doc.get("image") or {}).get("index_digest")
        if got is None:
            raise ScenarioError(f"publish: {self.registry.host}/{repo}:latest is not in the "
                                "registry after the run")
        if want and got != want:
            raise ScenarioError(f"publish: registry has {got} for {repo}:latest, the build "
                                f"reported {want}")


class _FromLockfile(Scenario):
    """The `-lock` variants (mixed in before Cold/HotScenario): builds install from an apko
    lockfile made once per job from the served repository (`apkimage lock`), so they read no
    APKINDEX and solve nothing; a run that requests an index fails."""

    lock_path: Path

    def __enter__(self) -> Scenario:
        super().__enter__()  # the scenario class it is mixed into (next in the MRO)
        self.write_lock()
        return self

    def write_lock(self) -> None:
        import argparse

        from builder import lock
        from builder.commands.lock import make_lock

        ca = getattr(self.server, "ca_path", None) or getattr(self.server, "ca_file", None)
        args = argparse.Namespace(config=str(self.config_path), arch=[], include_paths=[],
                                  workdir=None, cache_dir=str(self.workdir / "lock-cache"),
                                  offline=False, ca_file=str(ca) if self.tls and ca else None)
        self.lock_path = self.workdir / "apko.lock.json"
        self.lock_path.write_bytes(lock.dumps(make_lock(args)))
        rm_tree(self.workdir / "lock-cache")

    def build_args(self, st: SideState, out: Path, spans: Path, impl: str,
                   extra: list[str] | None = None) -> list[str]:
        return super().build_args(st, out, spans, impl,
                                  [*(extra or []), "--lockfile", str(self.lock_path)])

    def after_run(self, st: SideState, spec: RunSpec, spans_doc: dict) -> None:
        super().after_run(st, spec, spans_doc)
        self.check_no_index(st, spec.check_token)

    def check_no_index(self, st: SideState, token: int) -> None:
        index = [r["path"] for r in self.requests()[token:]
                 if str(r.get("path", "")).endswith("APKINDEX.tar.gz")]
        if index:
            raise ScenarioError(f"{self.name} run of {st.label} requested {index[0]}: a "
                                "lockfile build reads no index")


class ColdLockScenario(_FromLockfile, ColdScenario):
    name = "cold-lock"


class HotLockScenario(_FromLockfile, HotScenario):
    name = "hot-lock"


SCENARIO_CLASSES: dict[str, type[Scenario]] = {
    "cold": ColdScenario, "hot": HotScenario, "offline": OfflineScenario,
    "publish": PublishScenario, "cold-lock": ColdLockScenario, "hot-lock": HotLockScenario,
}


def make_scenario(name: str, workload: Any, workdir: Path, **kw: Any) -> Scenario:
    try:
        cls = SCENARIO_CLASSES[name]
    except KeyError:
        raise ScenarioError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})") from None
    return cls(workload, workdir, **kw)



def rm_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        os.unlink(path)
