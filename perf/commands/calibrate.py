"""`apkperf calibrate`: A/A — the same tree and impl measured twice, interleaved — to show the
noise per stage and whether the gate's thresholds would have raised a false alarm."""

from __future__ import annotations

import argparse

from perf import gate, stats
from perf.compare import add_compare_options, format_rows, run_comparison
from perf.gitrefs import WORKTREE
from perf.records import metric


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="A/A run: noise per stage, suggested thresholds")
    p.add_argument("--tree", default=WORKTREE, help="git ref to measure (default: working tree)")
    add_compare_options(p, default_repeat=5)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.base_impl = args.head_impl = None
    rows, records, base, head = run_comparison(args, args.tree, args.tree)
    print(format_rows(rows, f"{base.label} (A)", f"{head.label} (A again)"))
    print("\nnoise per stage (MAD/median of all runs; worst A/A ratio CI bound):")
    print(f"{'scenario':9s} {'stage':10s} {'median s':>9s} {'MAD %':>7s} {'A/A CI':>15s} "
          f"{'suggested %':>11s} {'default %':>9s}")
    th = gate.Thresholds()
    alarms = 0
    for r in rows:
        vals = [v for rec in records if rec["scenario"] == r.scenario
                and (v := metric(rec, r.stage)) is not None]
        spread = 100 * stats.rel_spread(vals)
        worst = 100 * max(r.ci_hi - 1, 1 - r.ci_lo, 0.0)
        suggested = max(5.0, round(2 * worst + 2 * spread))
        default = th.for_stage(r.stage)
        flag = ""
        if r.verdict != stats.NO_CHANGE:
            flag = "  <- A/A reported a change"
            alarms += r.verdict == stats.SLOWER and r.ratio > 1 + default / 100
        print(f"{r.scenario:9s} {r.stage:10s} {stats.median(vals):9.3f} {spread:7.1f} "
              f"[{r.ci_lo:5.2f}, {r.ci_hi:5.2f}] {suggested:11.0f} {default:9.0f}{flag}")
    print(f"\ngate false alarms with default thresholds: {alarms}")
    return 0
