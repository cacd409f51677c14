"""Building the world and measuring it (`apkperf world`).

Per variant (an impl profile, with or without the layer cache, e.g. `stitched+lc`) the world
builds in one `apkimage build-many` process on the variant's own cache (`--mode many`; CPU
seconds per image are then the build's own, without the interpreter's start-up, paid once
per world), or as one `apkimage build` process per image (`--mode single`; CPU per image
includes start-up). Process CPU and peak RSS come from wait4 (the build process and its
children), per-image CPU from build-many's summary or wait4 per process.

Every measured world is hot: a warm-up builds the world once (filling the package, expanded
and layer caches), waits out the stamp settle window and builds it again (writing the
verification stamps), then the layer cache is emptied, so a measured `world` pays for every
layer once, the first time any image of the world makes it. `world-bump` then swaps the
repository for one with a bumped package (the same path, so configs, `etc/apk/repositories`
and every unaffected layer stay the same) and builds the world again on that cache: only the
images holding the package miss, and only on the layers it changed (its package layer and the
top layer, which holds the apk database).

Records: one JSON per `apkperf world` run, `.perf/world/<machine-id>/<commit>/<stamp>-
<workload>.json` — apart from the per-build run records of perf/records.py, so compare, gate
and trend never see them. Each holds every world build (scenario, variant, round) with its
totals and per image: digest, wall, CPU, layers hit/missed, bytes hashed and compressed, the
stage sums and the raw spans.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder.errors import ApkImageError
from perf.records import stages_from_spans
from perf.world import DEFAULT_BUMP, World

SCHEMA = 1
SCENARIOS = ("world", "world-bump")
MODES = ("many", "single")
CPU_NOTE = {
    "many": "one apkimage build-many process per world: per-image CPU is the build's own "
            "(time.process_time around it, all threads), without interpreter start-up, which "
            "the process CPU (wait4) pays once",
    "single": "one apkimage build process per image: per-image CPU from wait4, start-up "
              "(interpreter, imports) included",
}


class WorldError(ApkImageError):
    """A world build failed or its images disagree."""


@dataclass(frozen=True)
class Variant:
    impl: str
    layer_cache: bool

    @property
    def name(self) -> str:
        return self.impl + ("+lc" if self.layer_cache else "")


def parse_variants(values: list[str], layer_cache: bool | None = None) -> list[Variant]:
    """`reference,fast,stitched+lc`: profiles as `apkperf run --impl` splits them, a `+lc`
    on any item asking for the layer cache; `layer_cache` True/False forces it on/off for
    every variant. Duplicates are dropped."""
    from perf.commands.run import split_impls

    out: list[Variant] = []
    for item in split_impls(values or ["fast,stitched+lc"]):
        lc = "+lc" in item
        impl = item.replace("+lc", "")
        v = Variant(impl, lc if layer_cache is None else layer_cache)
        if v not in out:
            out.append(v)
    return out


# ----------------------------------------------------------------------------- per image


def image_summary(name: str, spans_doc: dict, digest: str, wall_s: float,
                  cpu_s: float, in_process: bool = False) -> dict[str, Any]:
    """What one image of a world build cost and reused, from its spans: layers (from the
    layer cache's hit/miss spans; without the cache every layer is made), bytes hashed (each
    made layer's tar for its diffID and its blob for its digest), bytes compressed (the tar
    bytes deflated; for stitched layers only those re-compressed near the cuts), the
    packages' compressed bytes reused verbatim, the blob bytes copied from the layer cache."""
    spans = spans_doc.get("spans") or []
    if in_process:  # build-many: the `startup` span is the process's, from its start
        spans = [sp for sp in spans if sp.get("name") != "startup"]
    hits = misses = made = hashed = compressed = verbatim = from_cache = 0
    hit_cpu = made_cpu = 0.0
    for sp in spans:
        attrs = sp.get("attrs") or {}
        out = attrs.get("output")
        if sp.get("name") in ("layer", "compress"):
            if out == "cache" and attrs.get("layer_cache") == "hit":
                hit_cpu += float(sp.get("cpu_s", 0.0))
            elif out != "cache":
                made_cpu += float(sp.get("cpu_s", 0.0))
        if sp.get("name") == "layer":
            if out == "cache":
                if attrs.get("layer_cache") == "hit":
                    hits += 1
                    from_cache += int(attrs.get("reused_tar_bytes", 0))
                else:
                    misses += 1
            else:
                made += 1
                hashed += int(sp.get("bytes_out", 0))
        elif sp.get("name") == "compress" and out != "cache":
            hashed += int(sp.get("bytes_out", 0))
            if out == "blob":
                compressed += int(attrs.get("recompressed_in", 0))
                verbatim += int(attrs.get("reused_bytes", 0))
            else:
                compressed += int(sp.get("bytes_in", 0))
    return {"name": name, "digest": digest, "wall_s": wall_s, "cpu_s": cpu_s,
            "layers": hits + made, "layers_made": made, "layer_cache_hits": hits,
            "layer_cache_misses": misses, "bytes_hashed": hashed, "bytes_compressed": compressed,
            "bytes_reused_verbatim": verbatim, "tar_bytes_from_cache": from_cache,
            "rebuilt": made > 0, "layer_cache_hit_cpu_s": hit_cpu, "layers_made_cpu_s": made_cpu,
            "stages": stages_from_spans({"spans": spans}),
            "spans": spans_doc}


def world_totals(images: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(images)
    keys = ("layers", "layers_made", "layer_cache_hits", "layer_cache_misses", "bytes_hashed",
            "bytes_compressed", "bytes_reused_verbatim", "tar_bytes_from_cache")
    out: dict[str, Any] = {k: sum(int(i[k]) for i in images) for k in keys}
    image_cpu = sum(float(i["cpu_s"]) for i in images)
    out.update(images=n, images_rebuilt=sum(1 for i in images if i["rebuilt"]),
               image_cpu_s=image_cpu, image_cpu_per_image_s=image_cpu / n if n else 0.0)
    return out


# ----------------------------------------------------------------------------- processes


def _wait(proc: subprocess.Popen[bytes], t0: float) -> tuple[int, float, float, float]:
    """returncode, wall, CPU (user+sys, the process and its waited-for children), peak RSS
    MB."""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (proc.returncode, time.perf_counter() - t0, ru.ru_utime + ru.ru_stime,
            ru.ru_maxrss / 1024.0)


def _tail(path: Path, n: int = 6) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


class _Watch:
    """Counts finished images of a build-many run (each appears as `out/<stem>` when done)
    for the progress line."""

    def __init__(self, out: Path, tick: Callable[[], None]) -> None:
        self.out, self.tick = out, tick
        self.seen: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="world-progress", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            self.poll()

    def poll(self) -> None:
        try:
            names = {p.name for p in self.out.iterdir() if not p.name.startswith(".")}
        except OSError:
            return
        for _ in names - self.seen:
            self.tick()
        self.seen |= names

    def __enter__(self) -> _Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.poll()


def build_world(argv0: list[str], configs: list[Path], out: Path, cache: Path, variant: Variant,
                logs: Path, mode: str = "many", env: dict[str, str] | None = None,
                tick: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Build every config once; totals of the process(es) and the per-image summaries."""
    out.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    flags = ["--impl", variant.impl, "--cache-dir", str(cache)]
    flags += ["--layer-cache"] if variant.layer_cache else []
    images: list[dict[str, Any]] = []
    if mode == "many":
        argv = [*argv0, "--log-level", "warn", "build-many", *map(str, configs),
                "--out-dir", str(out), *flags, "--json"]
        stdout, stderr = logs / "build-many.json", logs / "build-many.log"
        with open(stdout, "wb") as so, open(stderr, "wb") as se, _Watch(out, tick):
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=so, stderr=se, env=env, start_new_session=True)
            rc, wall, cpu, rss = _wait(proc, t0)
        if rc != 0:
            raise WorldError(f"apkimage build-many ({variant.name}) exited {rc}:\n"
                             f"{_tail(stderr)}")
        doc = json.loads(stdout.read_text())
        for img in doc["images"]:
            images.append(image_summary(Path(img["config"]).stem, img["spans"],
                                        img["index_digest"], float(img["wall_s"]),
                                        float(img["cpu_s"]), in_process=True))
        return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss, "images": images}
    wall = cpu = rss = 0.0
    for config in configs:
        stem = config.stem
        spans = logs / f"{stem}.spans.json"
        argv = [*argv0, "--log-level", "warn", "build", str(config), f"{stem}:latest",
                str(out / stem), *flags, "--spans", str(spans)]
        with open(logs / f"{stem}.log", "wb") as se:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=se, env=env,
                                    start_new_session=True)
            rc, w, c, r = _wait(proc, t0)
        if rc != 0:
            raise WorldError(f"apkimage build {config} ({variant.name}) exited {rc}:\n"
                             f"{_tail(logs / f'{stem}.log')}")
        doc = json.loads(spans.read_text())
        images.append(image_summary(stem, doc, (doc.get("image") or {}).get("index_digest", ""),
                                    w, c))
        wall, cpu, rss = wall + w, cpu + c, max(rss, r)
        tick()
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss, "images": images}


def reset_layer_cache(cache_dir: Path) -> int:
    """Forget every finished layer of the cache (records and their blobs); the packages and
    their expanded forms stay. Returns how many layers were dropped."""
    from builder.repo.cache import Cache

    cache = Cache(cache_dir)
    layers = cache.base / "layers"
    n = 0
    for rec in layers.glob("*/*.json") if layers.is_dir() else []:
        try:
            digest = json.loads(rec.read_text())["digest"]
            cache.blobs.path(digest).unlink(missing_ok=True)
        except (OSError, ValueError, KeyError):
            pass
        n += 1
    shutil.rmtree(layers, ignore_errors=True)
    return n


def filesystem_of(path: Path) -> str:
    """`<fstype> <mountpoint>` of the mount holding `path` (from /proc/mounts)."""
    best, kind = "", "?"
    real = str(path.resolve())
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, kind = mnt, parts[2]
    return f"{kind} {best}"


def default_work_root(root: Path) -> Path:
    """/dev/shm when it is there and writable (the root disk is slow at many small files),
    else the repository's .perf/world-run."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / "apkperf-world"
    return root / ".perf" / "world-run"


# ----------------------------------------------------------------------------- the job


@dataclass
class WorldPlan:
    world: World
    variants: list[Variant]
    scenarios: list[str]
    repeat: int = 1
    mode: str = "many"
    work_root: Path = Path("/dev/shm/apkperf-world")
    bump: tuple[str, str] = DEFAULT_BUMP
    argv0: list[str] = field(default_factory=lambda: [sys.executable, "-m", "builder.cli"])
    keep: bool = False
    commit: str = ""  # of the tree argv0 runs (default: this working tree's HEAD)
    dirty: bool = False


def _swap_link(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)[:60]


class WorldJob:
    """Warm up, then per round every variant (the order rotating between rounds) builds
    `world` and, when asked, `world-bump` on the same cache."""

    def __init__(self, plan: WorldPlan, progress: Any = None,
                 say: Callable[[str], None] = lambda s: None) -> None:
        from builder.progress import NULL

        self.plan = plan
        self.progress = progress or NULL
        self.say = say
        self.job_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.dir = plan.work_root / self.job_id

    def _build(self, label: str, configs: list[Path], cache: Path, variant: Variant,
               env: dict[str, str]) -> dict[str, Any]:
        out = self.dir / "out" / _slug(label)
        self.progress.start(label)
        self.progress.expect(len(configs), 0, "images")
        try:
            res = build_world(self.plan.argv0, configs, out, cache, variant,
                              self.dir / "logs" / _slug(label), self.plan.mode, env,
                              tick=lambda: self.progress.package_done(0))
        finally:
            self.progress.end()
            shutil.rmtree(out, ignore_errors=True)  # tmpfs: outputs are memory
        return res

    def run(self) -> dict[str, Any]:
        from perf.runner import _wait_for_settled_cache, build_env

        p = self.plan
        self.dir.mkdir(parents=True)
        repo_link = self.dir / "repo"
        world = p.world
        if world.repo_dir is not None:
            _swap_link(repo_link, world.repo_dir)
            configs = world.configs_for(self.dir / "configs", str(repo_link))
        else:
            configs = list(world.configs)
        bumped = None
        if "world-bump" in p.scenarios:
            from perf.world import prepare_bump

            bumped = prepare_bump(world, *p.bump)
        env = build_env({})
        caches = {v: self.dir / f"cache-{_slug(v.name)}" for v in p.variants}
        started = datetime.now(UTC).isoformat(timespec="milliseconds")
        for v in p.variants:  # warm: packages, expanded forms, stamps
            warm = Variant(v.impl, True)
            for i in range(2):
                self.say(f"warm-up {i + 1}/2: {v.name}")
                self._build(f"warm-up {v.name}", configs, caches[v], warm, env)
                if i == 0:
                    _wait_for_settled_cache()
        runs: list[dict[str, Any]] = []
        for rnd in range(p.repeat):
            order = p.variants[rnd % len(p.variants):] + p.variants[:rnd % len(p.variants)]
            for v in order:
                reset_layer_cache(caches[v])
                res = self._build(f"world {v.name}", configs, caches[v], v, env)
                if "world" in p.scenarios:
                    runs.append(self._run_doc("world", v, rnd, res))
                    self.say(_line(runs[-1]))
                if bumped is not None:
                    _swap_link(repo_link, bumped)
                    try:
                        res = self._build(f"world-bump {v.name}", configs, caches[v], v, env)
                    finally:
                        assert world.repo_dir is not None
                        _swap_link(repo_link, world.repo_dir)
                    runs.append(self._run_doc("world-bump", v, rnd, res))
                    self.say(_line(runs[-1]))
        from perf.gitrefs import head_state, repo_root
        from perf.machine import machine_id, machine_info

        commit, dirty = p.commit, p.dirty
        if not commit:
            try:
                commit, dirty = head_state(repo_root())
            except ApkImageError:
                commit, dirty = "0" * 40, True
        machine = machine_info()
        doc = {"schema": SCHEMA, "kind": "world", "workload": world.name, "job": self.job_id,
               "commit": commit, "dirty": dirty, "machine_id": machine_id(machine),
               "machine": machine, "started_at": started, "mode": p.mode,
               "cpu_note": CPU_NOTE[p.mode], "filesystem": filesystem_of(self.dir),
               "work_dir": str(self.dir), "scenarios": list(p.scenarios),
               "variants": [v.name for v in p.variants], "repeat": p.repeat,
               "bump": {"package": p.bump[0], "version": p.bump[1]} if bumped else None,
               "world": world.describe(), "runs": runs}
        doc["checks"] = check_digests(runs)
        if not p.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        return doc

    def _run_doc(self, scenario: str, v: Variant, rnd: int, res: dict[str, Any]) -> dict:
        totals = world_totals(res["images"])
        n = max(1, totals["images"])
        return {"scenario": scenario, "variant": v.name, "impl": v.impl,
                "layer_cache": v.layer_cache, "round": rnd, "wall_s": res["wall_s"],
                "cpu_s": res["cpu_s"], "cpu_per_image_s": res["cpu_s"] / n,
                "peak_rss_mb": res["peak_rss_mb"], **totals, "per_image": res["images"]}


def check_digests(runs: list[dict[str, Any]]) -> list[str]:
    """Problems: an image whose digest differs between rounds or between the layer cache on
    and off, for one impl and scenario ([] when all agree)."""
    seen: dict[tuple[str, str, str], tuple[str, str]] = {}
    problems = []
    for run in runs:
        for img in run["per_image"]:
            key = (run["scenario"], run["impl"], img["name"])
            was = seen.setdefault(key, (img["digest"], run["variant"]))
            if was[0] != img["digest"]:
                problems.append(f"{run['scenario']}/{img['name']}: {run['variant']} round "
                                f"{run['round']} made {img['digest'][:19]}, {was[1]} made "
                                f"{was[0][:19]}")
    return problems


def _line(run: dict[str, Any]) -> str:
    return (f"{run['scenario']:<10} {run['variant']:<14} round {run['round']}: "
            f"{run['wall_s']:.2f} s wall, {run['cpu_s']:.2f} s CPU "
            f"({run['image_cpu_per_image_s'] * 1000:.0f} ms per image in-build), "
            f"{run['images_rebuilt']}/{run['images']} images rebuilt")


# ----------------------------------------------------------------------------- records


def results_dir(root: Path) -> Path:
    return root / ".perf" / "world"


def save(root: Path, doc: dict[str, Any]) -> Path:
    commit = doc["commit"][:12] + ("-dirty" if doc["dirty"] else "")
    stamp = doc["started_at"].replace(":", "").replace("-", "")
    path = results_dir(root) / doc["machine_id"] / commit / f"{stamp}-{_slug(doc['workload'])}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load(root: Path, machine: str | None = None) -> list[dict[str, Any]]:
    """Stored world records (one machine, or all), oldest first; unreadable files skipped."""
    base = results_dir(root)
    docs = []
    pattern = f"{machine}/*/*.json" if machine else "*/*/*.json"
    for path in sorted(base.glob(pattern)) if base.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("kind") == "world" and doc.get("schema") == SCHEMA:
            doc["_path"] = str(path)
            docs.append(doc)
    return sorted(docs, key=lambda d: d.get("started_at", ""))


# ----------------------------------------------------------------------------- summaries


def _median(xs: list[float]) -> float:
    from perf.stats import median

    return float(median(xs)) if xs else 0.0


def rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (scenario, variant): medians over rounds."""
    out = []
    for scen in dict.fromkeys(r["scenario"] for r in doc["runs"]):
        for var in dict.fromkeys(r["variant"] for r in doc["runs"] if r["scenario"] == scen):
            rs = [r for r in doc["runs"] if r["scenario"] == scen and r["variant"] == var]
            row: dict[str, Any] = {"scenario": scen, "variant": var, "n": len(rs),
                                   "images": rs[0]["images"]}
            for k in ("wall_s", "cpu_s", "cpu_per_image_s", "image_cpu_per_image_s",
                      "peak_rss_mb", "bytes_hashed", "bytes_compressed", "layer_cache_hits",
                      "layer_cache_misses", "layers_made", "images_rebuilt",
                      "bytes_reused_verbatim"):
                row[k] = _median([float(r[k]) for r in rs])
            out.append(row)
    return out


def ratios(doc: dict[str, Any], scenario: str = "world") -> list[str]:
    """`A over B` CPU per image (in-build and process) for each pair of variants of one
    scenario, from the same run."""
    rs = [r for r in rows(doc) if r["scenario"] == scenario]
    lines = []
    for i, a in enumerate(rs):
        for b in rs[i + 1:]:
            lo, hi = (a, b) if a["image_cpu_per_image_s"] <= b["image_cpu_per_image_s"] else (b, a)
            if lo["image_cpu_per_image_s"] <= 0:
                continue
            x = hi["image_cpu_per_image_s"] / lo["image_cpu_per_image_s"]
            lines.append(f"{scenario}: {lo['variant']} uses x{x:.1f} "
                         f"less CPU per image than {hi['variant']} in-build "
                         f"({lo['image_cpu_per_image_s'] * 1000:.0f} vs "
                         f"{hi['image_cpu_per_image_s'] * 1000:.0f} ms), "
                         f"x{hi['cpu_per_image_s'] / max(lo['cpu_per_image_s'], 1e-9):.1f} "
                         f"counting process CPU ({lo['cpu_per_image_s'] * 1000:.0f} vs "
                         f"{hi['cpu_per_image_s'] * 1000:.0f} ms)")
    return lines


def image_breakdown(img: dict[str, Any]) -> dict[str, float]:
    """Where one image's in-build CPU went, seconds: layers taken from the layer cache (key,
    lookup, blob copy), layers made (tar, hash, compress), each other stage, and what no span
    covers."""
    out: dict[str, float] = {"layer cache hits": float(img.get("layer_cache_hit_cpu_s", 0.0)),
                             "layers made": float(img.get("layers_made_cpu_s", 0.0))}
    for stage, st in img["stages"].items():
        if stage not in ("layer", "compress", "startup"):
            out[stage] = out.get(stage, 0.0) + float(st["cpu_s"])
    out["outside spans"] = max(0.0, float(img["cpu_s"]) - sum(out.values()))
    return out


def breakdown(run: dict[str, Any]) -> dict[str, float]:
    """Where a world build's in-build CPU went, ms per image (image_breakdown summed over
    the images, over their number)."""
    n = max(1, len(run["per_image"]))
    out: dict[str, float] = {"layer cache hits": 0.0, "layers made": 0.0}
    for img in run["per_image"]:
        for k, v in image_breakdown(img).items():
            if k != "outside spans":
                out[k] = out.get(k, 0.0) + v
    total = sum(float(i["cpu_s"]) for i in run["per_image"])
    out["outside spans"] = max(0.0, total - sum(out.values()))
    return {k: v / n * 1000 for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def breakdown_line(run: dict[str, Any]) -> str:
    parts = ", ".join(f"{k} {v:.0f}" for k, v in breakdown(run).items() if v >= 0.5)
    return f"{run['scenario']} {run['variant']}: in-build ms per image: {parts}"


def format_table(doc: dict[str, Any]) -> str:
    head = (f"{'scenario':<10} {'variant':<16} {'n':>2} {'img':>3} {'wall s':>8} {'CPU s':>8} "
            f"{'CPU/img':>8} {'in-build':>8} {'hashed MB':>9} {'deflated MB':>11} "
            f"{'hit/miss':>9} {'rebuilt':>7} {'RSS MB':>7}")
    lines = [head, "-" * len(head)]
    for r in rows(doc):
        lines.append(
            f"{r['scenario']:<10} {r['variant']:<16} {r['n']:>2} {r['images']:>3} "
            f"{r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} {r['cpu_per_image_s'] * 1000:>6.0f}ms "
            f"{r['image_cpu_per_image_s'] * 1000:>6.0f}ms {r['bytes_hashed'] / 1e6:>9.1f} "
            f"{r['bytes_compressed'] / 1e6:>11.1f} "
            f"{int(r['layer_cache_hits']):>4}/{int(r['layer_cache_misses']):<4} "
            f"{int(r['images_rebuilt']):>7} {r['peak_rss_mb']:>7.0f}")
    lines.append("")
    lines.append(f"CPU/img: the build process's CPU (wait4) over images; in-build: "
                 f"{doc['cpu_note'].split(':')[0]}: {CPU_NOTE[doc['mode']].split(': ', 1)[1]}")
    lines += ratios(doc, "world")
    if doc.get("bump"):
        lines += [bump_line(doc, r) for r in rows(doc) if r["scenario"] == "world-bump"]
    lines += [breakdown_line(r) for r in doc["runs"] if r["round"] == 0]
    for p in doc.get("checks") or []:
        lines.append(f"DIGEST MISMATCH {p}")
    return "\n".join(lines)


def bump_line(doc: dict[str, Any], row: dict[str, Any]) -> str:
    """What world-bump rebuilt for one variant, one line."""
    b = doc["bump"]
    run = next(r for r in doc["runs"] if r["scenario"] == "world-bump"
               and r["variant"] == row["variant"])
    rebuilt = [i["name"] for i in run["per_image"] if i["rebuilt"]]
    return (f"world-bump {row['variant']}: {b['package']} -> {b['version']}: "
            f"{len(rebuilt)}/{run['images']} images rebuilt anything "
            f"({', '.join(rebuilt[:8])}{' ...' if len(rebuilt) > 8 else ''}), "
            f"{run['layers_made']} layers made")
