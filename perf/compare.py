"""Base vs head: both measured in one job, interleaved, then per scenario and per stage the
HEAD/BASE ratio of wall time with a paired bootstrap CI, a Mann-Whitney p-value and a verdict.

A side is a tree (git ref in its own worktree, or the working tree) with an impl profile, so
the same code answers "commit A vs commit B" and "profile X vs profile Y in one tree".
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from perf import stats
from perf.gitrefs import WORKTREE, prepare_tree, repo_root
from perf.machine import mismatches
from perf.runner import Job, Plan, Side, _paired, stage_names
from perf.scenarios import ScenarioError


@dataclass(frozen=True)
class Metric:
    """What a comparison compares: a record field (total) and the same field per stage."""

    name: str
    field: str
    unit: str  # as printed, after dividing by `scale`
    scale: float
    min_effect: float  # ratios within this are never called a change
    min_abs: float  # nor are changes under this (in the field's own unit)

    def show(self, value: float) -> str:
        return f"{value / self.scale:g} {self.unit}"


WALL = Metric("wall", "wall_s", "s", 1.0, min_effect=0.05, min_abs=0.02)
# Counted under callgrind (perf/instructions.py): deterministic to ~0.01 %, so a change of
# 0.5 % is real; stages under 5 M instructions (~2 ms) are not judged on their own.
INSTRUCTIONS = Metric("instructions", "instructions", "M", 1e6, min_effect=0.005,
                      min_abs=5e6)
METRICS = {m.name: m for m in (WALL, INSTRUCTIONS)}


@dataclass(frozen=True)
class Row:
    scenario: str
    stage: str  # "total" or a stage name
    base_median: float
    head_median: float
    ratio: float
    ci_lo: float
    ci_hi: float
    p_value: float
    n: int
    verdict: str  # the decision (stats.FASTER/SLOWER/NO_CHANGE): what gate and calibrate use
    wording: str  # what is printed: also names changes under the absolute floor
    metric: str = WALL.name

    def to_json(self) -> dict:
        return asdict(self)


def compare_records(records: list[dict], base_label: str, head_label: str, *,
                    metric: Metric = WALL, min_effect: float | None = None,
                    min_abs: float | None = None, confidence: float = 0.95,
                    seed: int = 0) -> list[Row]:
    """Rows for every scenario × (total + each stage) present on both sides."""
    min_effect = metric.min_effect if min_effect is None else min_effect
    min_abs = metric.min_abs if min_abs is None else min_abs
    rows: list[Row] = []
    scenarios = list(dict.fromkeys(r["scenario"] for r in records))
    for scen in scenarios:
        base = [r for r in records if r["scenario"] == scen and r["side"] == base_label]
        head = [r for r in records if r["scenario"] == scen and r["side"] == head_label]
        if not base or not head:
            continue
        for b_rec in base[:1]:
            for h_rec in head[:1]:
                bad = mismatches(b_rec["machine"], h_rec["machine"])
                if bad:
                    raise ValueError(f"refusing to compare {scen}: machines differ ({bad[0]})")
        for stage in ["total", *stage_names(base + head)]:
            bs, hs = _paired(base, head, stage, metric.field)
            if not bs:
                continue
            ci = stats.bootstrap_ratio_ci(bs, hs, confidence=confidence, seed=seed)
            try:
                p = stats.mann_whitney_u(hs, bs).p
            except ValueError:
                p = 1.0
            bm, hm = stats.median(bs), stats.median(hs)
            v = stats.verdict(ci, min_effect=min_effect, base_median=bm, head_median=hm,
                              min_abs=min_abs)
            words = stats.wording(v, stats.direction(ci, min_effect=min_effect),
                                  metric.show(min_abs))
            rows.append(Row(scen, stage, bm, hm, ci.ratio, ci.lo, ci.hi, p, len(bs), v, words,
                            metric.name))
    return rows


def format_rows(rows: list[Row], base_desc: str, head_desc: str) -> str:
    out = [f"BASE = {base_desc}", f"HEAD = {head_desc}"]
    scen = None
    for r in rows:
        m = METRICS[r.metric]
        if r.scenario != scen:
            scen = r.scenario
            what = "" if m is WALL else f", {m.name} in {m.unit}"
            out.append(f"\n== {scen} (n={r.n} pairs{what}) ==")
            out.append(f"{'stage':10s} {'base ' + m.unit:>9s} {'head ' + m.unit:>9s} "
                       f"{'head/base':>10s} {'95% CI':>15s} {'MW p':>6s}  verdict")
        # Instruction counts are exact enough for four decimals of a ratio.
        value, ratio, ci = (3, 3, 2) if m is WALL else (1, 4, 4)
        out.append(f"{r.stage:10s} {r.base_median / m.scale:9.{value}f} "
                   f"{r.head_median / m.scale:9.{value}f} {r.ratio:10.{ratio}f} "
                   f"[{r.ci_lo:5.{ci}f}, {r.ci_hi:5.{ci}f}] {r.p_value:6.3f}  {r.wording}")
    return "\n".join(out)


# --------------------------------------------------------------------------- CLI plumbing


def add_compare_options(p: argparse.ArgumentParser, *, default_repeat: int = 5) -> None:
    p.add_argument("--workload", default="small")
    p.add_argument("--scenario", default="hot", help="comma list of cold,hot,offline,publish")
    p.add_argument("--impl", default="reference", help="impl profile for both sides")
    p.add_argument("--base-impl", help="impl profile of BASE (default --impl)")
    p.add_argument("--head-impl", help="impl profile of HEAD (default --impl)")
    p.add_argument("--metric", choices=sorted(METRICS), default=WALL.name,
                   help="wall: wall time (interleaved rounds); instructions: instructions "
                        "counted under valgrind's callgrind, deterministic (slow: ~30x)")
    p.add_argument("--repeat", type=int, default=None,
                   help=f"rounds (default {default_repeat}; --metric instructions 1)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--bandwidth-mbit", type=float, default=0.0)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--min-effect", type=float, default=None,
                   help=f"smallest relative change reported (default {WALL.min_effect:g}, "
                        f"instructions {INSTRUCTIONS.min_effect:g})")
    p.add_argument("--min-abs", type=float, default=None,
                   help=f"smallest absolute change reported, in seconds or instructions "
                        f"(default {WALL.min_abs:g} s, {INSTRUCTIONS.min_abs:g} instructions)")
    p.set_defaults(default_repeat=default_repeat)
    p.add_argument("--no-save", action="store_true", help="do not store run records")
    p.add_argument("--json", type=Path, help="write the comparison rows as JSON here")


def build_sides(root: Path, base_ref: str, head_ref: str, base_impl: str,
                head_impl: str) -> tuple[Side, Side]:
    """Base/head sides; the same ref on both sides is measured from one tree (A/A)."""
    base_tree = prepare_tree(root, base_ref)
    head_tree = base_tree if head_ref == base_ref else prepare_tree(root, head_ref)
    b_lab = f"base:{base_ref}" + (f"[{base_impl}]" if base_impl != head_impl else "")
    h_lab = f"head:{head_ref}" + (f"[{head_impl}]" if base_impl != head_impl else "")
    return Side(b_lab, base_tree, base_impl), Side(h_lab, head_tree, head_impl)


def run_comparison(args: argparse.Namespace, base_ref: str, head_ref: str | None, *,
                   log: Callable[[str], None] = print,
                   budget_s: float | None = None) -> tuple[list[Row], list[dict], Side, Side]:
    from perf.workloads import prepare_workload

    root = repo_root()
    head_ref = head_ref or WORKTREE
    base_impl = args.base_impl or args.impl
    head_impl = args.head_impl or args.impl
    metric = METRICS[args.metric]
    counter = None
    if metric is INSTRUCTIONS:
        from perf import instructions

        why = instructions.unavailable()
        if why:
            raise ScenarioError(f"--metric instructions: {why}")
        counter = instructions.COUNTER
    repeat = args.repeat or (1 if counter else args.default_repeat)
    base, head = build_sides(root, base_ref, head_ref, base_impl, head_impl)
    workload = prepare_workload(args.workload, root / ".perf" / "workloads")
    plan = Plan(
        workload=args.workload, scenarios=[s for s in args.scenario.split(",") if s],
        sides=[base, head], repeat=repeat, warmup=args.warmup,
        latency_ms=args.latency_ms, bandwidth_mbit=args.bandwidth_mbit, tls=args.tls,
        results_root=None if args.no_save else root / ".perf" / "results",
        work_root=root / ".perf" / "run", budget_s=budget_s, counter=counter,
    )
    log(f"measuring {base.label} ({base.tree.commit[:10]}) vs {head.label} "
        f"({head.tree.commit[:10]}{'+dirty' if head.tree.dirty else ''}), "
        f"{repeat} interleaved rounds after {args.warmup} warm-up"
        + (f", instructions counted by {counter}" if counter else ""))
    records = Job(plan, workload, log=log).run()
    rows = compare_records(records, base.label, head.label, metric=metric,
                           min_effect=args.min_effect, min_abs=args.min_abs)
    return rows, records, base, head


def describe(side: Side) -> str:
    t = side.tree
    return (f"{side.label}: {t.commit[:12]}{' (dirty)' if t.dirty else ''} impl={side.impl} "
            f"at {t.path}")
