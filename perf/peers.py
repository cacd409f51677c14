"""Peers: the tools a user would reach for instead of apkimage, timed on the same workload in
the same interleaved run (A B A B …, alternating direction), each run a fresh process timed
from outside by `runner.measure` (wall, user+sys CPU and peak RSS of the whole process tree).

Entries of one job:
- apkimage with each impl profile, `cold` and `hot`, through the harness's own scenarios
  (`perf.scenarios`: cold = checked-empty cache and packages fetched from the local server,
  hot = warm cache and no package downloaded) and the runner's `Job`;
- `tar | gzip -6` and `tar | pigz -6` of the image tree;
- `umoci repack` of a bundle (of an empty image made with `umoci init`/`umoci new`) whose rootfs
  holds the image tree;
- `apk add --initdb` of the workload's packages into an empty root from the same local
  repository server, then `tar | pigz -6`: cold = `--no-cache`, hot = a warm `--cache-dir`.

The image tree is apkimage's own image: one unmeasured build, its layer extracted, checked
against the layer's paths; every tar-based peer packs that tree, and its output is checked to
hold the same paths as apkimage's layer. A tool that is not installed is skipped, and one that
fails or refuses the workload is reported with its own words: no number is made up.

Results: `.perf/peers/<machine-id>/<timestamp>-<workload>.json` (machine fingerprint, commit,
samples, summaries, ratios); `peers_html()` renders the latest ones for `apkperf report`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import yaml

from perf import stats
from perf.gitrefs import Tree
from perf.runner import BuildFailed, Job, Plan, ProcResult, Side, build_env, measure
from perf.scenarios import (
    ColdScenario,
    Scenario,
    ScenarioError,
    SideState,
    apk_requests,
    make_scenario,
    rm_tree,
)

SCHEMA_VERSION = 1
PEER_SCENARIOS = ("cold", "hot")
DEFAULT_IMPLS = ("reference", "fast", "stitched")
TAR = "tar --sort=name --numeric-owner --owner=0 --group=0 -C {root} -cf - ."
PEER_KEYS = ("tar-gzip", "tar-pigz", "umoci", "apk-cold", "apk-hot")
SCOPE = ("tar | gzip, tar | pigz and umoci repack only pack the installed tree; apkimage and "
         "apk add + tar | pigz do the whole job: resolve, fetch, verify, install, pack")


class PeerFailed(BuildFailed):
    """A peer tool exited non-zero (message: its command and the tail of its stderr)."""


# --------------------------------------------------------------------------- small helpers


def find_tool(name: str, dirs: list[Path] | tuple[Path, ...] = ()) -> str | None:
    """`name` in one of `dirs` (first) or on PATH."""
    for d in dirs:
        cand = Path(d) / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which(name)


def tool_version(exe: str) -> str:
    for flag in ("--version", "-V"):
        try:
            proc = subprocess.run([exe, flag], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        text = (proc.stdout or proc.stderr).strip()
        if proc.returncode == 0 and text:
            return text.splitlines()[0]
    return "unknown"


def _tail(path: Path, lines: int = 4) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def norm_path(name: str) -> str:
    """A tar member name as a path relative to the root: `./usr/` and `usr` are the same."""
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/").rstrip("/")
    return "" if name == "." else name


def tar_paths(path: Path) -> list[str]:
    """Normalised member names of a tar (plain, gzip or anything tarfile reads), in order, with
    repeats (a layer may list a directory once per package)."""
    with tarfile.open(path, mode="r:*") as tf:
        return [n for m in tf if (n := norm_path(m.name))]


def tree_stats(root: Path) -> dict[str, Any]:
    """Entries under `root` (root itself not counted) by kind, and regular-file bytes (a
    hardlinked file counted once)."""
    counts = {"dirs": 0, "files": 0, "symlinks": 0, "other": 0}
    seen: set[tuple[int, int]] = set()
    nbytes = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISDIR(st.st_mode):
                counts["dirs"] += 1
            elif stat.S_ISLNK(st.st_mode):
                counts["symlinks"] += 1
            elif stat.S_ISREG(st.st_mode):
                counts["files"] += 1
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    nbytes += st.st_size
            else:
                counts["other"] += 1
    return {"entries": sum(counts.values()), **counts, "file_bytes": nbytes}


def tree_paths(root: Path) -> set[str]:
    out: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            out.add(name if rel == "." else f"{rel}/{name}")
    return out


def compare_paths(want: set[str], got: list[str]) -> dict[str, Any]:
    have = set(got)
    missing, extra = sorted(want - have), sorted(have - want)
    return {"same_paths": not missing and not extra, "paths": len(have),
            "missing": len(missing), "extra": len(extra),
            "missing_examples": missing[:5], "extra_examples": extra[:5]}


def summarise(samples: list[dict]) -> dict[str, float] | None:
    if not samples:
        return None
    walls = [s["wall_s"] for s in samples]
    cpus = [s["cpu_s"] for s in samples]
    return {"n": len(samples), "wall_median_s": stats.median(walls), "wall_mad_s": stats.mad(walls),
            "cpu_median_s": stats.median(cpus), "cpu_mad_s": stats.mad(cpus),
            "peak_rss_median_mb": stats.median([s["peak_rss_mb"] for s in samples])}


def _sample(res: ProcResult, round_: int) -> dict:
    return {"round": round_, "wall_s": res.wall_s, "cpu_s": res.cpu_s, "user_s": res.user_s,
            "sys_s": res.sys_s, "peak_rss_mb": res.peak_rss_mb}


def tar_pipe(tar: str, root: Path, compressor: str, out: Path) -> str:
    """`tar --sort=name … -C ROOT -cf - . | COMPRESSOR -6 > OUT` as a shell command."""
    args = TAR.format(root=shlex.quote(str(root))).split(" ", 1)[1]
    return f"{shlex.quote(tar)} {args} | {shlex.quote(compressor)} -6 > {shlex.quote(str(out))}"


def workload_packages(workload: Any) -> list[str]:
    doc = yaml.safe_load(Path(workload.config_path).read_text()) or {}
    return [str(p) for p in (doc.get("contents") or {}).get("packages") or []]


# --------------------------------------------------------------------------- entries


@dataclass
class Entry:
    """One thing measured every round: an apkimage profile in a scenario, or a peer tool."""

    key: str
    name: str
    kind: str  # "apkimage" or "peer"
    command: str = ""
    impl: str | None = None
    scenario: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    status: str = "ok"  # ok | skipped | failed | refused
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)
    image: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        return {"key": self.key, "name": self.name, "kind": self.kind, "command": self.command,
                "impl": self.impl, "scenario": self.scenario, "versions": self.versions,
                "status": self.status, "reason": self.reason, "notes": self.notes,
                "samples": self.samples, "summary": summarise(self.samples),
                "output": self.output, "image": self.image}


class Peer(Entry):
    """A peer: `setup()` once (unmeasured), then per run `prepare(tag)` (unmeasured), the timed
    `argv`, and `check(tag)` (unmeasured)."""

    tools: tuple[str, ...] = ()

    def __init__(self, key: str, name: str, job: PeersJob) -> None:
        super().__init__(key, name, "peer")
        self.job = job
        self.dir = job.work / "peers" / key
        self.exe: dict[str, str] = {}

    def find_tools(self) -> bool:
        missing = []
        for tool in self.tools:
            exe = find_tool(tool, self.job.pplan.tool_dirs)
            if exe is None:
                missing.append(tool)
            else:
                self.exe[tool] = exe
                self.versions[tool] = tool_version(exe)
        if missing:
            self.status = "skipped"
            where = ", ".join(["PATH", *map(str, self.job.pplan.tool_dirs)])
            self.reason = (f"not installed: {', '.join(missing)} not found on {where} "
                           "(`make peer-tools` installs what Debian packages)")
            return False
        return True

    @property
    def out(self) -> Path:
        return self.dir / "layer.tar.gz"

    def setup(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def prepare(self, tag: str) -> None:
        if self.out.exists():
            self.out.unlink()

    def argv(self, tag: str) -> list[str]:
        raise NotImplementedError

    def check(self, tag: str) -> None:
        if not self.out.is_file() or self.out.stat().st_size == 0:
            raise PeerFailed(f"{self.name}: wrote no output at {self.out}")

    def output_paths(self) -> list[str]:
        return tar_paths(self.out)

    def shell(self, script: str) -> list[str]:
        return ["bash", "-c", "set -o pipefail; " + script]


class TarPeer(Peer):
    def __init__(self, key: str, job: PeersJob, compressor: str) -> None:
        super().__init__(key, f"tar | {compressor} -6", job)
        self.compressor = compressor
        self.tools = ("tar", compressor)

    def setup(self) -> None:
        super().setup()
        self.command = (TAR.format(root="ROOT") + f" | {self.compressor} -6 > layer.tar.gz")

    def argv(self, tag: str) -> list[str]:
        return self.shell(tar_pipe(self.exe["tar"], self.job.image_root,
                                   self.exe[self.compressor], self.out))


class UmociPeer(Peer):
    tools = ("umoci",)

    def __init__(self, job: PeersJob) -> None:
        super().__init__("umoci", "umoci repack", job)
        self.rootless = [] if os.geteuid() == 0 else ["--rootless"]

    def _umoci(self, *args: str) -> None:
        proc = subprocess.run([self.exe["umoci"], *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise PeerFailed(f"umoci {args[0]} failed: {proc.stderr.strip()[-400:]}")

    def setup(self) -> None:
        super().setup()
        self.pristine = self.dir / "layout-empty"
        self.layout = self.dir / "layout"
        self.bundle = self.dir / "bundle"
        self._umoci("init", "--layout", str(self.pristine))
        self._umoci("new", "--image", f"{self.pristine}:empty")
        self._umoci("unpack", *self.rootless, "--image", f"{self.pristine}:empty",
                    str(self.bundle))
        rootfs = self.bundle / "rootfs"
        if any(rootfs.iterdir()):
            raise PeerFailed(f"umoci unpack of an empty image left entries in {rootfs}")
        proc = subprocess.run(["cp", "-a", f"{self.job.image_root}/.", f"{rootfs}/"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise PeerFailed(f"copying the image tree into {rootfs}: {proc.stderr.strip()}")
        self.command = ("umoci repack --image LAYOUT:empty BUNDLE  (bundle of `umoci new`, "
                        "rootfs = the image tree)")

    def prepare(self, tag: str) -> None:
        # every repack starts from the same empty layout (repack adds blobs and retags)
        rm_tree(self.layout)
        shutil.copytree(self.pristine, self.layout, symlinks=True)

    def argv(self, tag: str) -> list[str]:
        return [self.exe["umoci"], "repack", *self.rootless, "--image", f"{self.layout}:empty",
                str(self.bundle)]

    def _layer_blob(self) -> Path:
        index = json.loads((self.layout / "index.json").read_text())
        blobs = self.layout / "blobs" / "sha256"
        for desc in index.get("manifests") or []:
            if (desc.get("annotations") or {}).get("org.opencontainers.image.ref.name") != "empty":
                continue
            manifest = json.loads((blobs / desc["digest"].split(":")[1]).read_text())
            layers = manifest.get("layers") or []
            if layers:
                self.output["media_type"] = layers[-1].get("mediaType")
                return blobs / layers[-1]["digest"].split(":")[1]
        raise PeerFailed(f"umoci repack left no layer for tag 'empty' in {self.layout}")

    @property
    def out(self) -> Path:
        try:
            return self._layer_blob()
        except (OSError, ValueError, KeyError, PeerFailed):
            return self.dir / "no-layer"


class ApkPeer(Peer):
    """`apk add --initdb` into an empty root from the workload's repository (served by the
    cold scenario's server), then `tar | pigz -6` of that root."""

    tools = ("apk", "tar", "pigz")

    def __init__(self, job: PeersJob, hot: bool) -> None:
        key = "apk-hot" if hot else "apk-cold"
        super().__init__(key, f"apk add ({'hot' if hot else 'cold'}) + tar | pigz -6", job)
        self.hot = hot
        self.scenario = "hot" if hot else "cold"

    def setup(self) -> None:
        super().setup()
        job = self.job
        self.keys = self.dir / "keys"
        self.keys.mkdir(parents=True, exist_ok=True)
        key = Path(job.workload.key_path)
        shutil.copy2(key, self.keys / key.name)
        self.cache = self.dir / "cache"
        self.root = self.dir / "root"
        self.packages = workload_packages(job.workload)
        self.url = job.repo_server_url()
        self.command = ("apk add --initdb --root ROOT --keys-dir KEYS --repository URL "
                        f"--arch {job.workload.arch} --no-scripts "
                        f"{'--cache-dir CACHE' if self.hot else '--no-cache'} "
                        f"{' '.join(self.packages)} && " + TAR.format(root="ROOT")
                        + " | pigz -6 > layer.tar.gz")
        if self.hot:
            # warm apk's cache with an unmeasured install (also the trial of the repository)
            self.cache.mkdir(parents=True, exist_ok=True)
            self._trial("warm")
            if not any(p.suffix == ".apk" for p in self.cache.rglob("*")):
                self.notes.append(f"apk left no .apk file in its cache {self.cache} after the "
                                  "warm-up install")
        else:
            self._trial("trial")

    def _apk_argv(self, root: Path) -> list[str]:
        cache = ["--cache-dir", str(self.cache)] if self.hot else ["--no-cache"]
        return [self.exe["apk"], "add", "--initdb", "--root", str(root), "--keys-dir",
                str(self.keys), "--repository", self.url, "--arch", self.job.workload.arch,
                "--no-scripts", *cache, *self.packages]

    def _trial(self, tag: str) -> None:
        """An unmeasured install: does apk accept the repository, its index and keys?"""
        root = self.dir / f"root-{tag}"
        rm_tree(root)
        root.mkdir(parents=True)
        log = self.dir / f"{tag}.log"
        res = measure(self._apk_argv(root), cwd=self.dir, env=build_env({}), stdout=log,
                      stderr=log, timeout=self.job.pplan.timeout_s)
        rm_tree(root)
        if res.returncode != 0:
            self.status = "refused"
            self.reason = (f"apk add exited {res.returncode} on the workload's repository "
                           f"{self.url}: {_tail(log, 6)}")
            raise PeerFailed(self.reason)

    def prepare(self, tag: str) -> None:
        super().prepare(tag)
        rm_tree(self.root)
        self.root.mkdir(parents=True)
        self.n0 = len(self.job.server_requests())

    def argv(self, tag: str) -> list[str]:
        apk = shlex.join(self._apk_argv(self.root))
        return self.shell(f"{apk} && " + tar_pipe(self.exe["tar"], self.root, self.exe["pigz"],
                                                  self.out))

    def check(self, tag: str) -> None:
        super().check(tag)
        fetched = apk_requests(self.job.server_requests()[self.n0:])
        if self.hot and fetched:
            raise PeerFailed(f"{self.name}: apk downloaded {len(fetched)} package(s) with a "
                             f"warm cache (e.g. {fetched[0]}): it was not hot")
        if not self.hot and not fetched:
            raise PeerFailed(f"{self.name}: apk fetched no package from {self.url}: it was "
                             "not cold")


# --------------------------------------------------------------------------- the job


@dataclass
class PeersPlan:
    workload: str
    tree: Tree
    impls: list[str] = field(default_factory=lambda: list(DEFAULT_IMPLS))
    scenarios: list[str] = field(default_factory=lambda: list(PEER_SCENARIOS))
    peers: list[str] = field(default_factory=lambda: list(PEER_KEYS))
    repeat: int = 3
    warmup: int = 1
    work_root: Path = Path(".perf/peers-run")
    results_root: Path | None = None  # None: do not store
    keep_outputs: bool = False
    tool_dirs: list[Path] = field(default_factory=list)  # searched before PATH
    timeout_s: float = 1800.0


class PeersJob(Job):
    """The runner's Job for the apkimage entries (scenario set-up and checks, fresh process per
    build, records), with the peers interleaved into the same rounds."""

    def __init__(self, pplan: PeersPlan, workload: Any, *,
                 log: Callable[[str], None] = print) -> None:
        for s in pplan.scenarios:
            if s not in PEER_SCENARIOS:
                raise ScenarioError(f"peers: scenario {s!r} is not one of "
                                    f"{', '.join(PEER_SCENARIOS)}")
        unknown = [p for p in pplan.peers if p not in PEER_KEYS]
        if unknown:
            raise ScenarioError(f"peers: unknown peer(s) {', '.join(unknown)} "
                                f"(known: {', '.join(PEER_KEYS)})")
        plan = Plan(workload=pplan.workload, scenarios=list(pplan.scenarios),
                    sides=[Side(impl, pplan.tree, impl) for impl in pplan.impls],
                    repeat=pplan.repeat, warmup=pplan.warmup, results_root=None,
                    work_root=pplan.work_root, timeout_s=pplan.timeout_s,
                    keep_outputs=pplan.keep_outputs)
        super().__init__(plan, workload, log=log)
        self.pplan = pplan
        self.scens: dict[str, Scenario] = {}
        self.states: dict[tuple[str, str], SideState] = {}
        self.entries: list[Entry] = []
        self.image_root = self.work / "image" / "root"
        self.image: dict[str, Any] = {}
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.load_start = os.getloadavg()  # the machine is shared: how busy it was

    # servers ----------------------------------------------------------------
    def _server_scenario(self) -> Scenario:
        return self.scens.get("cold") or next(iter(self.scens.values()))

    def repo_server_url(self) -> str:
        return self._server_scenario().server.url

    def server_requests(self) -> list[dict]:
        return self._server_scenario().requests()

    # run --------------------------------------------------------------------
    def run_peers(self) -> dict:
        try:
            with contextlib.ExitStack() as stack:
                for name in self.plan.scenarios:
                    self.scens[name] = stack.enter_context(make_scenario(
                        name, self.workload, self.work / name))
                self._prepare_apkimage()
                self._make_image_tree()
                self._prepare_peers()
                self._rounds()
                self._check_outputs()
            return self.result()
        finally:
            if not self.pplan.keep_outputs:
                rm_tree(self.work)

    def _prepare_apkimage(self) -> None:
        for side in self.plan.sides:
            for name, scen in self.scens.items():
                st = scen.side_state(side.label)
                self.states[(name, side.label)] = st
                scen.prepare_side(st)
                if scen.warm_cache:
                    n0 = len(scen.requests())
                    self._build(side, scen, st, "warm", scen.build_args)
                    scen.after_warm(st, scen.requests()[n0:])
                self.entries.append(Entry(
                    key=f"apkimage-{side.impl}-{name}", name=f"apkimage {side.impl} {name}",
                    kind="apkimage", impl=side.impl, scenario=name,
                    command=f"apkimage build CONFIG TAG OUT --impl {side.impl} "
                            f"--cache-dir CACHE ({name} cache)"))

    def _make_image_tree(self) -> None:
        """One unmeasured build; its layer extracted to `image_root` and checked."""
        scen = self.scens.get("hot") or next(iter(self.scens.values()))
        side = self.plan.sides[0]
        st = self.states[(scen.name, side.label)]
        d = self.work / "image"
        out, spans = d / "oci", d / "spans.json"
        d.mkdir(parents=True, exist_ok=True)
        args = scen.build_args(st, out, spans, side.impl)
        if scen.name == "cold" and isinstance(scen, ColdScenario):
            scen.reset_cache(st)
        res = measure(side.tree.builder_argv() + args, cwd=side.tree.path,
                      env=build_env(self.plan.env), stdout=d / "build.log", stderr=d / "build.log",
                      timeout=self.plan.timeout_s)
        if res.returncode != 0:
            raise BuildFailed(f"the image build ({side.impl}) exited {res.returncode}: "
                              f"{_tail(d / 'build.log')}")
        img = (json.loads(spans.read_text()).get("image") or {})
        manifests = img.get("manifests") or {}
        if len(manifests) != 1:
            raise ScenarioError(f"peers: the image has {len(manifests)} manifests; one arch "
                                "expected")
        (arch, man), = manifests.items()
        layers = man.get("layers") or []
        if len(layers) != 1:
            raise ScenarioError(f"peers: the image has {len(layers)} layers; one expected")
        blob = out / "blobs" / "sha256" / layers[0]["digest"].split(":")[1]
        self.image_root.mkdir(parents=True)
        proc = subprocess.run(["tar", "-x", "--numeric-owner", "-p", "--warning=no-unknown-keyword",
                               "-f", str(blob), "-C", str(self.image_root)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ScenarioError(f"peers: extracting the layer {blob}: {proc.stderr.strip()[-400:]}")
        layer_paths = tar_paths(blob)
        self.layer_paths = set(layer_paths)
        self.layer_blob = blob
        extracted = tree_stats(self.image_root)
        found = tree_paths(self.image_root)
        check = compare_paths(self.layer_paths, sorted(found))
        self.image = {
            "impl": side.impl, "scenario": scen.name, "arch": arch,
            "layer_digest": layers[0]["digest"], "layer_bytes": layers[0].get("size"),
            "layer_media_type": layers[0].get("media_type"),
            "diff_id": (man.get("diff_ids") or [None])[0],
            "layer_members": len(layer_paths), "layer_paths": len(self.layer_paths),
            "tree": extracted, "tree_matches_layer": check["same_paths"],
            "tree_check": check, "root": str(self.image_root),
            "layer_path": str(blob),
        }
        self.log(f"  image tree: {describe_tree(self.image)}")
        if not check["same_paths"]:
            self.log(f"  WARNING: the extracted tree differs from the layer: {check}")

    def _make_peers(self) -> list[Peer]:
        made: dict[str, Peer] = {
            "tar-gzip": TarPeer("tar-gzip", self, "gzip"),
            "tar-pigz": TarPeer("tar-pigz", self, "pigz"),
            "umoci": UmociPeer(self),
            "apk-cold": ApkPeer(self, hot=False),
            "apk-hot": ApkPeer(self, hot=True),
        }
        return [made[k] for k in PEER_KEYS if k in self.pplan.peers]

    def _prepare_peers(self) -> None:
        for peer in self._make_peers():
            self.entries.append(peer)
            if not peer.find_tools():
                self.log(f"  {peer.name}: skipped ({peer.reason})")
                continue
            try:
                peer.setup()
            except PeerFailed as exc:
                if peer.status == "ok":
                    peer.status = "failed"
                    peer.reason = str(exc)
                self.log(f"  {peer.name}: {peer.status} ({peer.reason})")

    def _run_entry(self, entry: Entry, tag: str, round_: int, record: bool) -> None:
        if isinstance(entry, Peer):
            entry.prepare(tag)
            log = entry.dir / f"log-{tag}.txt"
            res = measure(entry.argv(tag), cwd=entry.dir, env=build_env({"LC_ALL": "C"}),
                          stdout=log, stderr=log, timeout=self.plan.timeout_s)
            if res.returncode != 0:
                raise PeerFailed(f"{entry.name} exited {res.returncode}: {_tail(log)}")
            entry.check(tag)
            if record:
                entry.samples.append(_sample(res, round_))
            return
        assert entry.scenario is not None and entry.impl is not None
        scen = self.scens[entry.scenario]
        side = next(s for s in self.plan.sides if s.impl == entry.impl)
        n0 = len(self.records)
        self._one(scen, side, self.states[(scen.name, side.label)], f"{tag}", record=record,
                  round_=round_)
        if record:
            rec = self.records[n0]
            entry.samples.append({"round": round_, "wall_s": rec["wall_s"],
                                  "cpu_s": rec["cpu_s"], "user_s": rec["user_s"],
                                  "sys_s": rec["sys_s"], "peak_rss_mb": rec["peak_rss_mb"]})

    def _rounds(self) -> None:
        active = [e for e in self.entries if e.active]
        total = self.plan.warmup + self.plan.repeat
        for r in range(total):
            record = r >= self.plan.warmup
            rnd = r - self.plan.warmup
            order = active if r % 2 == 0 else list(reversed(active))
            for entry in order:
                if not entry.active:
                    continue
                tag = f"r{rnd}" if record else f"warmup{r}"
                try:
                    self._run_entry(entry, tag, rnd, record)
                except PeerFailed as exc:
                    entry.status, entry.reason = "failed", str(exc)
                    self.log(f"  {entry.name}: failed ({exc})")
                    continue
                if record:
                    s = entry.samples[-1]
                    self.log(f"  {entry.name:36s} round {rnd}: {s['wall_s']:.3f} s wall, "
                             f"{s['cpu_s']:.3f} s cpu")

    def _check_outputs(self) -> None:
        for entry in self.entries:
            if isinstance(entry, Peer) and entry.status == "ok" and entry.samples:
                out = entry.out
                entry.output.update({"bytes": out.stat().st_size, "path": str(out)})
                got = entry.output_paths()
                entry.output.update(compare_paths(self.layer_paths, got))
                entry.output["members"] = len(got)
                if isinstance(entry, ApkPeer):
                    entry.notes.append("apk installs its own tree (its database, no apko "
                                       "mutations): the path check compares it with apkimage's "
                                       "image, it is not expected to match")
                elif not entry.output["same_paths"]:
                    entry.notes.append("its layer does not hold the same paths as apkimage's")
        by_key = {(r["impl"], r["scenario"]): r for r in self.records}
        for entry in self.entries:
            if entry.kind == "apkimage" and entry.samples:
                rec = by_key[(entry.impl, entry.scenario)]
                man: dict[str, Any] = next(iter(rec["image"].get("manifests", {}).values()), {})
                layers = man.get("layers") or []
                entry.image = {"digest": rec["image"]["digest"],
                               "diff_ids": rec["image"]["diff_ids"],
                               "compressor": rec.get("compressor")}
                if layers:
                    entry.output = {"bytes": layers[0].get("size"),
                                    "media_type": layers[0].get("media_type")}
                entry.versions = {"apkimage": rec["commit"][:12] + (
                    "+dirty" if rec["dirty"] else "")}

    # result -----------------------------------------------------------------
    def result(self) -> dict:
        tree = self.plan.sides[0].tree
        return {
            "schema": SCHEMA_VERSION, "kind": "peers", "job": self.job_id,
            "workload": self.workload.name, "started_at": self.started_at,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": tree.commit, "dirty": tree.dirty, "tree": tree.label,
            "machine": self.machine, "machine_id": self.machine_id,
            "loadavg": {"start": list(self.load_start), "end": list(os.getloadavg())},
            "options": {"repeat": self.plan.repeat, "warmup": self.plan.warmup,
                        "impls": [s.impl for s in self.plan.sides],
                        "scenarios": self.plan.scenarios, "peers": self.pplan.peers},
            "image": {k: v for k, v in self.image.items()
                      if self.pplan.keep_outputs or k not in ("root", "layer_path")},
            "entries": [e.to_json() for e in self.entries],
            "ratios": ratios([e.to_json() for e in self.entries]),
        }


# --------------------------------------------------------------------------- statistics


def ratios(entries: list[dict]) -> list[dict]:
    """For every peer with samples and every apkimage entry with samples: the median of the
    paired per-round ratios peer/apkimage (wall and CPU) with a bootstrap CI of the wall one.
    > 1 means apkimage took less."""
    out = []
    apk = [e for e in entries if e["kind"] == "apkimage" and e["samples"]]
    for peer in (e for e in entries if e["kind"] == "peer" and e["samples"]):
        p_by = {s["round"]: s for s in peer["samples"]}
        for a in apk:
            a_by = {s["round"]: s for s in a["samples"]}
            rounds = sorted(set(p_by) & set(a_by))
            if not rounds:
                continue
            base = [a_by[r]["wall_s"] for r in rounds]
            head = [p_by[r]["wall_s"] for r in rounds]
            ci = stats.bootstrap_ratio_ci(base, head)
            cpu = stats.median([p_by[r]["cpu_s"] / a_by[r]["cpu_s"] if a_by[r]["cpu_s"] else 1.0
                                for r in rounds])
            out.append({"peer": peer["key"], "apkimage": a["key"], "pairs": len(rounds),
                        "wall_ratio": ci.ratio, "wall_ci": [ci.lo, ci.hi], "cpu_ratio": cpu})
    return out


def _times(x: float) -> str:
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def ratio_sentence(a_name: str, p_name: str, r: dict) -> str:
    """"stitched hot is 3.40x faster than tar | gzip -6 (wall; peer/apkimage x3.40, 95% CI
    x3.10..x3.70; CPU 2.00x less)" from a `ratios()` item; "not significant" when the CI of
    the wall ratio spans 1."""
    ratio, (lo, hi), cpu = r["wall_ratio"], r["wall_ci"], r["cpu_ratio"]
    if ratio >= 1:
        head = f"{a_name} is {_times(ratio)} faster than {p_name}"
    else:
        head = f"{a_name} is {_times(1 / ratio)} slower than {p_name}"
    noise = ", not significant" if lo <= 1 <= hi else ""
    cpu_text = f"{_times(cpu)} less" if cpu >= 1 else f"{_times(1 / cpu)} more"
    return (f"{head} (wall; peer/apkimage x{ratio:.2f}, 95% CI x{lo:.2f}..x{hi:.2f}{noise}; "
            f"CPU {cpu_text})")


def describe_tree(image: dict) -> str:
    t = image.get("tree") or {}
    return (f"apkimage {image.get('impl')} {image.get('scenario')} layer "
            f"{str(image.get('layer_digest'))[:19]} ({(image.get('layer_bytes') or 0) / 1e6:.2f} "
            f"MB, {image.get('layer_members')} members, {image.get('layer_paths')} distinct "
            f"paths); extracted: {t.get('entries')} entries ({t.get('files')} files, "
            f"{t.get('dirs')} dirs, {t.get('symlinks')} symlinks, {t.get('other')} other), "
            f"{(t.get('file_bytes') or 0) / 1e6:.2f} MB of file data; tree "
            f"{'matches' if image.get('tree_matches_layer') else 'DOES NOT match'} the layer's "
            "paths")


# --------------------------------------------------------------------------- text table


def _load(doc: dict, when: str) -> str:
    vals = (doc.get("loadavg") or {}).get(when)
    return "/".join(f"{v:.2f}" for v in vals) if vals else "?"


def format_table(doc: dict) -> str:
    entries = doc["entries"]
    by_key = {e["key"]: e for e in entries}
    lines = [f"\n== peers: {doc['workload']} ({doc['options']['repeat']} interleaved rounds after "
             f"{doc['options']['warmup']} warm-up; commit {doc['commit'][:12]}"
             f"{' dirty' if doc['dirty'] else ''}; {doc['machine_id']}) ==",
             f"image tree: {describe_tree(doc['image'])}",
             f"load average (1/5/15 min) at start {_load(doc, 'start')}, at end "
             f"{_load(doc, 'end')} (a shared machine: busy neighbours slow every entry)",
             f"({SCOPE})", "",
             f"{'entry':38s}{'n':>3s}{'wall median±MAD':>20s}{'cpu median':>12s}"
             f"{'RSS':>8s}{'output':>10s}  paths vs apkimage's layer"]
    for e in entries:
        s = e["summary"]
        if e["status"] != "ok" or not s:
            lines.append(f"{e['name']:38s}  {e['status'].upper()}: {e['reason']}")
            continue
        out = e.get("output") or {}
        size = f"{out['bytes'] / 1e6:.2f}MB" if out.get("bytes") else "-"
        if e["kind"] == "apkimage":
            paths = "(the layer)"
        elif out.get("same_paths"):
            paths = f"same {out['paths']} paths"
        elif "paths" in out:
            paths = f"{out['paths']} paths: {out['missing']} missing, {out['extra']} extra"
        else:
            paths = "-"
        lines.append(f"{e['name']:38s}{s['n']:>3d}"
                     f"{s['wall_median_s']:>12.3f}±{s['wall_mad_s']:.3f}s"
                     f"{s['cpu_median_s']:>11.3f}s{s['peak_rss_median_mb']:>6.0f}MB{size:>10s}"
                     f"  {paths}")
    rs = doc.get("ratios") or []
    apk_keys = list(dict.fromkeys(r["apkimage"] for r in rs))
    if rs:
        lines.append("")
        lines.append("peer wall / apkimage wall, median of paired rounds (>1: apkimage faster)")
        lines.append(f"{'peer':38s}" + "".join(f"{by_key[k]['name'][9:]:>18s}" for k in apk_keys))
        for pk in dict.fromkeys(r["peer"] for r in rs):
            cells = {r["apkimage"]: r for r in rs if r["peer"] == pk}
            lines.append(f"{by_key[pk]['name']:38s}" + "".join(
                f"{'x' + format(cells[k]['wall_ratio'], '.2f'):>18s}" if k in cells else
                f"{'-':>18s}" for k in apk_keys))
        lines.append("")
        for pk in dict.fromkeys(r["peer"] for r in rs):
            for r in (r for r in rs if r["peer"] == pk):
                a, p = by_key[r["apkimage"]]["name"], by_key[pk]["name"]
                lines.append(f"  {ratio_sentence(a[9:], p, r)}")
    for e in entries:
        for note in e.get("notes") or []:
            lines.append(f"  note, {e['name']}: {note}")
        if e["versions"] and e["kind"] == "peer" and e["status"] == "ok":
            lines.append(f"  {e['name']}: " + "; ".join(f"{k}: {v}"
                                                        for k, v in e["versions"].items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------- storage


def result_path(root: Path, doc: dict) -> Path:
    stamp = doc["started_at"].replace(":", "").replace("-", "").replace("+0000", "")
    slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in doc["workload"])[:60]
    return root / doc["machine_id"] / f"{stamp}-{slug}-{doc['job'][-6:]}.json"


def save_result(root: Path, doc: dict) -> Path:
    path = result_path(root, doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load_results(root: Path, machine_id: str | None = None) -> list[dict]:
    """Every stored peers result (one machine or all), oldest first; unreadable files are
    left out."""
    if not root.is_dir():
        return []
    dirs = [root / machine_id] if machine_id else sorted(p for p in root.iterdir() if p.is_dir())
    out = []
    for d in dirs:
        for path in sorted(d.glob("*.json")):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and doc.get("kind") == "peers" and \
                    doc.get("schema") == SCHEMA_VERSION and isinstance(doc.get("entries"), list):
                doc["_path"] = str(path)
                out.append(doc)
    return sorted(out, key=lambda d: d["started_at"])


def latest_per_workload(docs: list[dict]) -> list[dict]:
    latest: dict[str, dict] = {}
    for d in docs:
        latest[d["workload"]] = d
    return [latest[w] for w in sorted(latest)]


# --------------------------------------------------------------------------- chart + HTML


def render_chart(doc: dict, path: Path) -> Path:
    """Horizontal bars: median wall time per entry (MAD as error bar), CPU as a thin bar;
    skipped or failed entries named with their status. PNG (and SVG beside it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = doc["entries"]
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(entries) + 1.8))
    ys = list(range(len(entries)))
    for y, e in zip(ys, entries, strict=True):
        s = e.get("summary")
        colour = "#1f77b4" if e["kind"] == "apkimage" else "#ff7f0e"
        if e["status"] != "ok" or not s:
            ax.text(0, y, f"  {e['status']}: {e['reason'][:90]}", va="center", fontsize=8,
                    color="#888")
            continue
        ax.barh(y, s["wall_median_s"], xerr=s["wall_mad_s"], color=colour, height=0.6,
                edgecolor="white", error_kw={"elinewidth": 1, "capsize": 3, "alpha": 0.7})
        ax.barh(y + 0.22, s["cpu_median_s"], color="black", height=0.12, alpha=0.55)
        ax.text(s["wall_median_s"] + s["wall_mad_s"], y, f"  {s['wall_median_s']:.3f} s",
                va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels([e["name"] for e in entries], fontsize=9)
    ax.set_ylim(len(entries) - 0.4, -0.6)  # first entry on top, room below the last
    ax.set_xlabel("wall time, median of interleaved rounds (s); thin dark bar = CPU (user+sys)")
    ax.set_title(f"apkimage and its peers: {doc['workload']}, {doc['commit'][:10]}, "
                 f"{doc['options']['repeat']} rounds", fontsize=11)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
    return path


def _doc_html(doc: dict, out_dir: Path) -> str:
    slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in doc["workload"])[:60]
    chart = render_chart(doc, out_dir / "peers" / f"peers-{slug}.png")  # not a profile link
    by_key = {e["key"]: e for e in doc["entries"]}
    rows = []
    for e in doc["entries"]:
        s, out = e.get("summary"), e.get("output") or {}
        if e["status"] != "ok" or not s:
            rows.append(f"<tr><td>{escape(e['name'])}</td><td colspan='6' style='text-align:"
                        f"left'>{escape(e['status'])}: {escape(e['reason'])}</td></tr>")
            continue
        if e["kind"] == "apkimage":
            paths = "the layer"
        elif "same_paths" in out:
            paths = ("same " + str(out["paths"]) if out["same_paths"] else
                     f"{out['paths']}: {out['missing']} missing, {out['extra']} extra")
        else:
            paths = "–"
        size = f"{out['bytes'] / 1e6:.2f} MB" if out.get("bytes") else "–"
        rows.append(f"<tr><td>{escape(e['name'])}</td><td>{s['n']}</td>"
                    f"<td>{s['wall_median_s']:.3f} s<br><small>±{s['wall_mad_s']:.3f}</small></td>"
                    f"<td>{s['cpu_median_s']:.3f} s</td><td>{s['peak_rss_median_mb']:.0f} MB</td>"
                    f"<td>{size}</td><td>{escape(paths)}</td></tr>")
    sentences = []
    for r in doc.get("ratios") or []:
        a, p = by_key[r["apkimage"]]["name"][9:], by_key[r["peer"]]["name"]
        sentences.append(f"<li>{escape(ratio_sentence(a, p, r))}</li>")
    m = doc.get("machine") or {}
    return (f"<h3>{escape(doc['workload'])}</h3><p>job {escape(doc['job'])}, commit "
            f"{escape(doc['commit'][:12])}{' (dirty)' if doc['dirty'] else ''}, machine "
            f"{escape(doc['machine_id'])} ({escape(str(m.get('cpu_model')))}, {m.get('cores')} "
            f"cores), {doc['options']['repeat']} interleaved rounds, started "
            f"{escape(doc['started_at'])}, load average {_load(doc, 'start')} → "
            f"{_load(doc, 'end')}. Image tree: {escape(describe_tree(doc['image']))}. "
            f"{escape(SCOPE)}.</p>"
            "<table><tr><th>entry</th><th>n</th><th>wall</th><th>cpu</th><th>peak RSS</th>"
            f"<th>output</th><th>paths vs apkimage's layer</th></tr>{''.join(rows)}</table>"
            f"<ul>{''.join(sentences)}</ul>"
            f"<p><a href='peers/{chart.with_suffix('.svg').name}'><img src='peers/{chart.name}' "
            f"alt='peers {escape(doc['workload'])}'></a></p>")


def default_results_root() -> Path | None:
    env = os.environ.get("APKPERF_PEERS_DIR")
    if env:
        return Path(env)
    from perf.gitrefs import GitError, repo_root

    try:
        return repo_root() / ".perf" / "peers"
    except GitError:
        return None


def peers_html(out_dir: Path, results_root: Path | None = None,
               machine_id: str | None = None) -> str:
    """The report's "apkimage and its peers" section: the latest stored peers result per
    workload on this machine (`machine_id`, default the current one) as a table, ratio
    sentences and a chart written into `out_dir`."""
    from perf.machine import machine_id as current_machine

    root = results_root if results_root is not None else default_results_root()
    docs = load_results(root, machine_id or current_machine()) if root else []
    head = "<h2>apkimage and its peers</h2>"
    if not docs:
        return head + "<p>No peers results yet: run <code>apkperf peers</code>.</p>"
    parts = [head, "<p>The tools a user would reach for instead, timed in the same interleaved "
             "run on the same image tree (<code>apkperf peers</code>); ratios are medians of "
             "paired rounds, peer time over apkimage time.</p>"]
    for doc in latest_per_workload(docs):
        try:
            parts.append(_doc_html(doc, out_dir))
        except (KeyError, TypeError, ValueError) as exc:
            parts.append(f"<p>{escape(doc.get('_path', '?'))}: cannot render ({escape(str(exc))})"
                         "</p>")
    return "".join(parts)
