"""Measured builds: each one a fresh `apkimage` process, timed from outside (wall clock,
user+sys CPU and peak RSS of the whole process tree from `wait4`'s rusage), with the stage
spans the builder wrote read back into a run record.

A job runs every scenario for every side (an impl profile in a tree). After warm-up, rounds
are interleaved and alternate direction (A B, B A, A B …) so slow drift of the machine cannot
favour one side; round i of every side forms a pair for the paired statistics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder.errors import ApkImageError
from builder.spans import SPAWN_ENV
from perf import stats
from perf.gitrefs import Tree
from perf.machine import machine_id, machine_info
from perf.records import (
    SCHEMA_VERSION,
    compressor_of,
    image_from_spans,
    layers_from_spans,
    save_record,
    stages_from_spans,
)
from perf.scenarios import (
    RunSpec,
    Scenario,
    ScenarioError,
    SideState,
    make_scenario,
    preferred_repo_port,
    repo_port,
    rm_tree,
)


class BuildFailed(ApkImageError):
    """A measured build exited non-zero (the message carries the tail of its stderr)."""


@dataclass(frozen=True)
class ProcResult:
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def measure(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
            stdout: Path | None = None, stderr: Path | None = None,
            timeout: float | None = None) -> ProcResult:
    """Run argv to completion; wall time around fork→reap, CPU and max RSS from wait4 (which
    on Linux covers the child and every descendant it waited for)."""
    out = open(stdout, "wb") if stdout else subprocess.DEVNULL
    err = open(stderr, "wb") if stderr else subprocess.DEVNULL
    try:
        env = dict(os.environ if env is None else env)
        # The build's `startup` span is measured from here (builder/spans.py).
        env[SPAWN_ENV] = str(time.monotonic_ns())
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err,
                                start_new_session=True)
    finally:
        for f in (out, err):
            if not isinstance(f, int):  # an int is subprocess.DEVNULL
                f.close()
    timer = None
    if timeout:
        def kill() -> None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        timer = threading.Timer(timeout, kill)
        timer.start()
    try:
        _, status, ru = os.wait4(proc.pid, 0)
    finally:
        if timer:
            timer.cancel()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ProcResult(proc.returncode, wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss / 1024.0)


@dataclass
class Side:
    """One thing being measured: a tree (commit or working tree) with an impl profile."""

    label: str
    tree: Tree
    impl: str


@dataclass
class Plan:
    workload: str
    scenarios: list[str]
    sides: list[Side]
    repeat: int = 3
    warmup: int = 1
    latency_ms: int = 0
    bandwidth_mbit: float = 0.0
    tls: bool = False
    results_root: Path | None = None  # None: do not store records
    work_root: Path = Path(".perf/run")
    timeout_s: float = 1800.0
    budget_s: float | None = None  # stop starting new rounds after this much time
    keep_outputs: bool = False
    env: dict[str, str] = field(default_factory=dict)
    # Wraps the argv of measured runs (not warm-up builds), e.g. under a profiler:
    # wrap(argv, side, tag) -> argv.
    wrap: Callable[[list[str], Side, str], list[str]] | None = None
    # "callgrind": measured runs count instructions (perf/instructions.py); their records
    # carry `counter` and are kept apart from wall-time records.
    counter: str | None = None


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def build_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SOURCE_DATE_EPOCH", "0")
    env.pop("PYTHONPATH", None)  # the tree's own venv decides what `builder` is
    # Measured builds run as an installed tool does: with its bytecode cached (the warm-up
    # writes it), not recompiling every module in every process.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def _wait_for_settled_cache() -> None:
    """Let the warm-up's cache files age past the verification-stamp settle window before
    the warm-up rounds (which then write the stamps) and the measured ones: a build within
    that window of a cache write re-hashes the files (builder/repo/stamp.py), so without the
    wait the first rounds of a hot scenario measured a different, slower build than the rest
    (small hot fetch 30-40 ms against 10 ms)."""
    from builder.repo.stamp import SETTLE_NS

    time.sleep(SETTLE_NS / 1e9 + 0.1)


def image_identity(rec: dict[str, Any]) -> tuple:
    """What must not differ between a side's builds: per arch, the diffIDs and the config
    digest (the blob bytes may: a compressor with threads need not be deterministic)."""
    manifests = (rec.get("image") or {}).get("manifests") or {}
    return tuple((arch, tuple(m.get("diff_ids") or ()), m.get("config_digest"))
                 for arch, m in sorted(manifests.items()))


def check_same_image(records: list[dict[str, Any]]) -> None:
    """Every record of one side (tree + impl), in every scenario and round, is of the same
    image; a scenario comparison of different images would be mislabelled."""
    seen: dict[str, tuple[tuple, str]] = {}
    for rec in records:
        ident = image_identity(rec)
        first = seen.setdefault(rec["side"], (ident, f"{rec['scenario']} round {rec['round']}"))
        if first[0] != ident:
            raise ScenarioError(
                f"{rec['side']}: the {rec['scenario']} build (round {rec['round']}) made another "
                f"image than the {first[1]} build: diffIDs/config {_short(ident)} against "
                f"{_short(first[0])}")


def _short(ident: tuple) -> str:
    return "; ".join(f"{arch} {','.join(d[7:19] for d in ids)} config {str(cfg)[7:19]}"
                     for arch, ids, cfg in ident)


class Job:
    """One `apkperf run`: runs the plan, returns (and stores) the records."""

    def __init__(self, plan: Plan, workload: Any, *, log: Callable[[str], None] = print) -> None:
        self.plan = plan
        self.workload = workload
        self.log = log
        self.job_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.records: list[dict] = []
        self.machine = machine_info()
        self.machine_id = machine_id(self.machine)
        self.work = plan.work_root / self.job_id

    def run(self) -> list[dict]:
        t_start = time.monotonic()
        # One repository URL for every scenario: it is part of the image, so cold, hot and
        # offline build (and are checked to build) the same image.
        with repo_port(self.workload.name) as (port, preferred):
            if not preferred:
                self.log(f"  port {preferred_repo_port(self.workload.name)} is busy: the "
                         f"repository is served on {port}, so this job's images differ from "
                         "other jobs' (the URL is in the image)")
            self._run_scenarios(port, t_start)
        return self.records

    def _run_scenarios(self, port: int, t_start: float) -> None:
        try:
            for name in self.plan.scenarios:
                scen = make_scenario(name, self.workload, self.work / name,
                                     latency_ms=self.plan.latency_ms,
                                     bandwidth_mbit=self.plan.bandwidth_mbit, tls=self.plan.tls,
                                     repo_port=port)
                with scen:
                    self._run_scenario(scen, t_start)
                check_same_image(self.records)
        finally:
            if not self.plan.keep_outputs:
                rm_tree(self.work)

    def _run_scenario(self, scen: Scenario, t_start: float) -> None:
        states = {s.label: scen.side_state(s.label) for s in self.plan.sides}
        for side in self.plan.sides:
            st = states[side.label]
            scen.prepare_side(st)
            if scen.warm_cache:
                n0 = len(scen.requests())
                self._build(side, scen, st, "warm", scen.build_args)
                scen.after_warm(st, scen.requests()[n0:])
        if scen.warm_cache:
            _wait_for_settled_cache()
        for w in range(self.plan.warmup):
            for side in self.plan.sides:
                self._one(scen, side, states[side.label], f"warmup{w}", record=False)
        for r in range(self.plan.repeat):
            if (self.plan.budget_s is not None and r >= 2
                    and time.monotonic() - t_start > self.plan.budget_s):
                self.log(f"  time budget of {self.plan.budget_s:.0f} s reached after {r} rounds")
                break
            order = self.plan.sides if r % 2 == 0 else list(reversed(self.plan.sides))
            for side in order:
                rec = self._one(scen, side, states[side.label], str(r), record=True, round_=r)
                assert rec is not None
                self.log(f"  {scen.name:8s} {side.label:28s} round {r}: "
                         f"{rec['wall_s']:.2f} s wall, {rec['cpu_s']:.2f} s cpu")
        if scen.warm_cache:
            self._speed_of_light(scen.name, [states[s.label].cache_dir for s in self.plan.sides])

    def _speed_of_light(self, scenario: str, caches: list[Path]) -> None:
        """Measure the floor for this scenario on the first warm cache that has the fast
        expand's artefacts, and attach it to the scenario's records."""
        from perf import speedoflight

        for cache in caches:
            sol = speedoflight.measure(cache)
            if sol is None:
                continue
            self.log(f"  {scenario:8s} {sol.describe()}")
            for rec in self.records:
                if rec["scenario"] == scenario:
                    rec["speed_of_light_s"] = round(sol.seconds, 4)
                    rec["speed_of_light_2core_s"] = round(sol.parallel_seconds, 4)
                    if self.plan.results_root is not None:
                        save_record(self.plan.results_root, rec)  # same path, now complete
            return

    def _paths(self, st: SideState, tag: str) -> tuple[Path, Path]:
        st.dir.mkdir(parents=True, exist_ok=True)
        return st.dir / f"out-{tag}", st.dir / f"spans-{tag}.json"

    def _build(self, side: Side, scen: Scenario, st: SideState, tag: str,
               make_args: Callable[..., list[str]]) -> tuple[ProcResult, dict]:
        out, spans = self._paths(st, tag)
        args = make_args(st, out, spans, side.impl)
        return self._exec(side, st, tag, args, out, spans)

    def _exec(self, side: Side, st: SideState, tag: str, args: list[str], out: Path,
              spans: Path, *, wrapped: bool = False,
              spec: RunSpec | None = None) -> tuple[ProcResult, dict]:
        rm_tree(out)
        if spans.exists():
            spans.unlink()
        argv = side.tree.builder_argv() + args
        if wrapped and self.plan.wrap is not None:
            argv = self.plan.wrap(argv, side, tag)
        env = build_env(self.plan.env)
        if wrapped and self.plan.counter is not None:
            from perf import instructions

            argv = instructions.prefix(self._count_file(st, tag)) + argv
            env.update(instructions.ENV)
        if spec is not None:
            argv = spec.prefix + argv
            env.update(spec.env)
        res = measure(argv, cwd=side.tree.path, env=env,
                      stdout=st.dir / f"stdout-{tag}.txt", stderr=st.dir / f"stderr-{tag}.txt",
                      timeout=self.plan.timeout_s)
        if res.returncode != 0:
            raise BuildFailed(f"build of {side.label} ({side.impl}) exited {res.returncode}: "
                              f"{_tail(st.dir / f'stderr-{tag}.txt')}")
        try:
            doc = json.loads(spans.read_text())
        except (OSError, ValueError) as exc:
            raise BuildFailed(f"build of {side.label} wrote no readable spans file {spans}: "
                              f"{exc}") from exc
        if not self.plan.keep_outputs:
            rm_tree(out)
        if wrapped and self.plan.counter is not None:
            self._add_counts(doc, self._count_file(st, tag))
        return res, doc

    @staticmethod
    def _count_file(st: SideState, tag: str) -> Path:
        return st.dir / f"callgrind-{tag}.out"

    @staticmethod
    def _add_counts(doc: dict, out_file: Path) -> None:
        """Per-stage instruction counts into the spans document, beside the spans."""
        from perf import instructions

        marks = doc.get("marks")
        # A tree whose builder predates the stage marks is counted as a whole.
        doc["instructions"] = (instructions.read_counts(out_file, marks)
                               if isinstance(marks, list) else instructions.read_total(out_file))

    def _one(self, scen: Scenario, side: Side, st: SideState, tag: str, *, record: bool,
             round_: int = -1) -> dict | None:
        out, spans = self._paths(st, tag)
        started = datetime.now(UTC).isoformat(timespec="milliseconds")
        spec = scen.before_run(st, side.impl, out, spans)
        try:
            res, doc = self._exec(side, st, tag, spec.args, out, spans, wrapped=record,
                                  spec=spec)
        except BuildFailed:
            scen.after_failure(st, spec)
            raise
        scen.after_run(st, spec, doc)
        if not record:
            return None
        rec = make_record(self, scen.name, side, res, doc, started, round_)
        self.records.append(rec)
        if self.plan.results_root is not None:
            save_record(self.plan.results_root, rec)
        return rec


def make_record(job: Job, scenario: str, side: Side, res: ProcResult, spans_doc: dict,
                started_at: str, round_: int) -> dict:
    stages = stages_from_spans(spans_doc)
    image = image_from_spans(spans_doc)
    if not image.get("digest"):
        raise ScenarioError(f"{scenario}: the build of {side.label} reported no image digest")
    counted = {}
    if "instructions" in spans_doc:
        counts = spans_doc["instructions"]
        for name, count in counts.items():
            if name in stages:
                stages[name]["instructions"] = count
        counted = {"counter": job.plan.counter, "instructions": sum(counts.values()),
                   "instructions_by_stage": counts}
    return {
        "schema": SCHEMA_VERSION,
        "workload": job.workload.name,
        "scenario": scenario,
        "impl": side.impl,
        "side": side.label,
        "tree": side.tree.label,
        "commit": side.tree.commit,
        "dirty": side.tree.dirty,
        "wall_s": res.wall_s,
        "cpu_s": res.cpu_s,
        "user_s": res.user_s,
        "sys_s": res.sys_s,
        "peak_rss_mb": res.peak_rss_mb,
        "spans_total": spans_doc.get("total") or {},
        "layers": layers_from_spans(spans_doc),
        "memory": spans_doc.get("memory") or [],
        "stages": stages,
        "image": image,
        "compressor": compressor_of(stages, image),
        "machine": job.machine,
        "machine_id": job.machine_id,
        "started_at": started_at,
        "job": job.job_id,
        "round": round_,
        "options": {"latency_ms": job.plan.latency_ms, "bandwidth_mbit": job.plan.bandwidth_mbit,
                    "tls": job.plan.tls, "repeat": job.plan.repeat, "warmup": job.plan.warmup},
        **counted,
    }


# --------------------------------------------------------------------------- table


def stage_names(records: list[dict]) -> list[str]:
    from builder.spans import STAGES, STARTUP

    known = (STARTUP, *STAGES)
    seen = {s for r in records for s in r["stages"]}
    return [s for s in known if s in seen] + sorted(seen - set(known))


def memory_peak(rec: dict[str, Any]) -> str | None:
    """"peak RSS reached in <stage> ..." for a record whose build noted memory per span."""
    mem = rec.get("memory") or []
    if not mem:
        return None
    first = mem[0]
    peak = max(mem, key=lambda m: m.get("peak_mb", 0))
    at = next(m for m in mem if m.get("peak_mb", 0) >= peak.get("peak_mb", 0))
    where = f"{at['name']}" + (f" ({at['arch']})" if at.get("arch") else "")
    return (f"peak RSS {peak.get('peak_mb', 0):.0f} MB reached in {where}; after startup "
            f"{first.get('rss_mb', 0):.0f} MB (anon {first.get('anon_mb', 0):.0f}, files "
            f"{first.get('file_mb', 0):.0f}); after {where} {at.get('rss_mb', 0):.0f} MB "
            f"resident (anon {at.get('anon_mb', 0):.0f}, mapped files "
            f"{at.get('file_mb', 0):.0f})")


def layer_times(recs: list[dict[str, Any]]) -> str | None:
    """"layers (median layer+compress s, blob MB): 0 0.039+0.000 s 3.3 MB | …" for the
    records of a layered image, None for one layer."""
    if not recs or not recs[0].get("layers"):
        return None
    parts = []
    for i, row in enumerate(recs[0]["layers"]):
        rows = [r["layers"][i] for r in recs if len(r.get("layers") or []) > i]
        lay = stats.median([x["layer_s"] for x in rows])
        comp = stats.median([x["compress_s"] for x in rows])
        parts.append(f"{row['layer']} {lay:.3f}+{comp:.3f} s {row['blob_bytes'] / 1e6:.1f} MB")
    return "layers (median layer+compress s, blob): " + " | ".join(parts)


def stitch_reuse(rec: dict[str, Any]) -> str | None:
    """"reused … verbatim, re-compressed …" for a stitched build's record (from its compress
    span's attributes), None for other layer formats."""
    attrs = ((rec.get("stages") or {}).get("compress") or {}).get("attrs") or {}
    if "reused_bytes" not in attrs:
        return None
    reused, rin, rout = (attrs[k] for k in ("reused_bytes", "recompressed_in",
                                             "recompressed_out"))
    blob = (rec["stages"]["compress"].get("bytes_out") or 0)
    share = f" ({rout / blob:.2%} of the {blob / 1e6:.1f} MB blob)" if blob else ""
    return (f"reused {reused / 1e6:.1f} MB of compressed bytes verbatim, re-compressed "
            f"{rin / 1e6:.2f} MB into {rout / 1e6:.2f} MB{share}")


def _paired(base: list[dict], head: list[dict], stage: str,
            field: str = "wall_s") -> tuple[list[float], list[float]]:
    from perf.records import metric

    b_by = {r["round"]: r for r in base}
    h_by = {r["round"]: r for r in head}
    rounds = sorted(set(b_by) & set(h_by))
    bs, hs = [], []
    for rnd in rounds:
        bv, hv = metric(b_by[rnd], stage, field), metric(h_by[rnd], stage, field)
        if bv is not None and hv is not None:
            bs.append(bv)
            hs.append(hv)
    return bs, hs


def format_run_table(records: list[dict]) -> str:
    """Per scenario: median ± MAD of wall time (of instructions, for counted records) for the
    total and every stage, per side, and the median paired ratio against the first side."""
    from perf.records import group_by, metric

    counted = bool(records) and bool(records[0].get("counter"))
    field = "instructions" if counted else "wall_s"
    lines: list[str] = []
    for (scenario,), recs in group_by(records, "scenario").items():
        sides: dict[str, list[dict]] = {}
        for r in recs:
            sides.setdefault(r["side"], []).append(r)
        labels = list(sides)
        first = labels[0]
        lines.append(f"\n== {scenario} ({recs[0]['workload']}, "
                     f"{len(sides[first])} runs per side"
                     + (f", million instructions ({recs[0]['counter']})" if counted else "")
                     + ") ==")
        header = f"{'stage':10s}" + "".join(f"{lab[:26]:>30s}" for lab in labels)
        lines.append(header)
        for stage in ["total", *stage_names(recs)]:
            row = f"{stage:10s}"
            for lab in labels:
                vals = [v for r in sides[lab] if (v := metric(r, stage, field)) is not None]
                if not vals:
                    row += f"{'-':>30s}"
                    continue
                cell = (f"{stats.median(vals) / 1e6:.1f}±{stats.mad(vals) / 1e6:.2f}M" if counted
                        else f"{stats.median(vals):.3f}±{stats.mad(vals):.3f}s")
                if lab != first:
                    b, h = _paired(sides[first], sides[lab], stage, field)
                    if b:
                        ratio = stats.median([hv / bv if bv else 1.0
                                              for bv, hv in zip(b, h, strict=True)])
                        cell += f" x{ratio:.2f}"
                row += f"{cell:>30s}"
            lines.append(row)
        sol = next((r["speed_of_light_s"] for r in recs if "speed_of_light_s" in r), None)
        if sol and not counted:
            row = f"{'floor':10s}"
            for lab in labels:
                ratio = stats.median([r["wall_s"] for r in sides[lab]]) / sol
                cell = f"{sol:.3f}s total/floor x{ratio:.1f}"
                row += f"{cell:>30s}"
            lines.append(row)
            lines.append("  floor = speed of light: read the cached data once, SHA-256 of the "
                         "tar and of the compressed bytes, on one core")
            two = next((r["speed_of_light_2core_s"] for r in recs
                        if "speed_of_light_2core_s" in r), None)
            if two:
                ratios = ", ".join(
                    f"{lab} x{stats.median([r['wall_s'] for r in sides[lab]]) / two:.1f}"
                    for lab in labels)
                lines.append(f"  with the two hashes on two cores the floor is {two:.3f} s: "
                             f"total/that {ratios}")
        for lab in labels:
            rss = stats.median([r["peak_rss_mb"] for r in sides[lab]])
            cpu = stats.median([r["cpu_s"] for r in sides[lab]])
            comp = sides[lab][0].get("compressor")
            lines.append(f"  {lab}: cpu {cpu:.2f} s, peak RSS {rss:.0f} MB, compressor {comp}, "
                         f"image {str(sides[lab][0]['image'].get('digest'))[:19]}")
            reuse = stitch_reuse(sides[lab][0])
            if reuse:
                lines.append(f"  {lab}: {reuse}")
            per_layer = layer_times(sides[lab])
            if per_layer:
                lines.append(f"  {lab}: {per_layer}")
            held = memory_peak(sides[lab][0])
            if held:
                lines.append(f"  {lab}: {held}")
    return "\n".join(lines)
