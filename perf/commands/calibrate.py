"""`apkperf calibrate`: A/A — the same tree and impl measured twice, interleaved — to show the
noise per stage and how often the gate's thresholds would raise a false alarm (`--runs N`
A/A comparisons, each a job of its own, as N gate runs would be)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from perf import gate, stats
from perf.commands.gate import default_thresholds
from perf.compare import (
    METRICS,
    WALL,
    Metric,
    Row,
    add_compare_options,
    format_rows,
    run_comparison,
)
from perf.gitrefs import WORKTREE
from perf.records import metric


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="A/A runs: noise per stage, false alarms, thresholds")
    p.add_argument("--tree", default=WORKTREE, help="git ref to measure (default: working tree)")
    p.add_argument("--runs", type=int, default=1,
                   help="A/A comparisons to make; each is gated as `apkperf gate` would")
    p.add_argument("--ci", action="store_true", help="judge with the gate's --ci thresholds")
    add_compare_options(p, default_repeat=5)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.base_impl = args.head_impl = None
    m = METRICS[args.metric]
    th = gate.Thresholds(*default_thresholds(m.name, args.ci))
    json_out: Path | None = args.json
    all_rows: list[Row] = []
    all_records: list[dict] = []
    alarm_runs: list[list[str]] = []
    for i in range(args.runs):
        rows, records, base, head = run_comparison(args, args.tree, args.tree)
        if i == 0:
            print(format_rows(rows, f"{base.label} (A)", f"{head.label} (A again)"))
        failures = [f.describe() for f in gate.evaluate(rows, th)]
        if args.runs > 1:
            print(f"A/A run {i + 1}/{args.runs}: "
                  + ("; ".join(failures) if failures else "the gate passes"))
        if failures:
            alarm_runs.append(failures)
        all_rows += rows
        all_records += records
    print_noise(all_rows, all_records, m, th)
    print(f"\ngate false alarms ({m.name}, total {th.total_pct:g}%, stages {th.stage_pct:g}%): "
          f"{len(alarm_runs)} of {args.runs} A/A run(s)")
    if json_out:
        json_out.write_text(json.dumps({
            "metric": m.name, "runs": args.runs, "false_alarm_runs": len(alarm_runs),
            "failures": alarm_runs, "thresholds": [th.total_pct, th.stage_pct],
            "rows": [r.to_json() for r in all_rows]}, indent=1) + "\n")
    return 0


def print_noise(rows: list[Row], records: list[dict], m: Metric, th: gate.Thresholds) -> None:
    """Per scenario and stage over every run: the spread of all values, the widest A/A
    interval, and a threshold that spread would suggest."""
    assert m in METRICS.values()
    print("\nnoise per stage (MAD/median of all runs; widest A/A ratio CI bound of any run):")
    print(f"{'scenario':9s} {'stage':10s} {'median ' + m.unit:>9s} {'MAD %':>8s} "
          f"{'worst %':>8s} {'suggested %':>11s} {'default %':>9s}")
    # Wall time: never suggest under 5 %; instruction counts are deterministic enough for
    # a tenth of a percent.
    least = 5.0 if m is WALL else 0.1
    for key in dict.fromkeys((r.scenario, r.stage) for r in rows):
        mine = [r for r in rows if (r.scenario, r.stage) == key]
        vals = [v for rec in records if rec["scenario"] == key[0]
                and (v := metric(rec, key[1], m.field)) is not None]
        spread = 100 * stats.rel_spread(vals)
        worst = 100 * max(max(r.ci_hi - 1, 1 - r.ci_lo, 0.0) for r in mine)
        suggested = max(least, round(2 * worst + 2 * spread, 0 if m is WALL else 1))
        flag = "  <- A/A reported a change" if any(
            r.verdict != stats.NO_CHANGE for r in mine) else ""
        print(f"{key[0]:9s} {key[1]:10s} {stats.median(vals) / m.scale:9.3f} {spread:8.4f} "
              f"{worst:8.4f} {suggested:11g} {th.for_stage(key[1]):9g}{flag}")
