"""`apkperf gate BASE`: exit 1 when the total or a stage is significantly slower than BASE by
more than its threshold (0 otherwise, 2 when the measurement itself failed). `--ci` picks the
base (HEAD~1), thresholds and a time budget suitable for a shared CI runner."""

from __future__ import annotations

import argparse
import json
import sys
import time

from builder.errors import ApkImageError
from perf import gate
from perf.compare import add_compare_options, describe, format_rows, run_comparison
from perf.gitrefs import has_parent, repo_root


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gate", help="fail when HEAD is significantly slower than BASE")
    p.add_argument("base", nargs="?", default=None, help="git ref (--ci: default HEAD~1)")
    p.add_argument("head", nargs="?", default=None, help="default: the working tree")
    p.add_argument("--threshold", type=float, default=None,
                   help=f"percent slowdown allowed for the total (default "
                        f"{gate.DEFAULT_TOTAL_PCT:g}, --ci {gate.CI_TOTAL_PCT:g})")
    p.add_argument("--stage-default", type=float, default=None,
                   help=f"percent allowed for stages not named by --stage-threshold (default "
                        f"{gate.DEFAULT_STAGE_PCT:g}, --ci {gate.CI_STAGE_PCT:g})")
    p.add_argument("--stage-threshold", action="append", default=[], metavar="STAGE=PCT")
    p.add_argument("--ci", action="store_true",
                   help="CI mode: base HEAD~1 (skip when none), small workload, hot scenario, "
                        "loose thresholds, time budget")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds after which no new round starts (--ci default 240)")
    add_compare_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    budget = args.budget
    if args.ci:
        root = repo_root()
        if args.base is None:
            if not has_parent(root):
                print("apkperf gate --ci: no previous commit; nothing to compare, passing")
                return 0
            args.base = "HEAD~1"
        args.min_abs = max(args.min_abs, gate.CI_MIN_ABS_S)
        budget = budget if budget is not None else 240.0
    if args.base is None:
        print("apkperf gate: BASE is required (or use --ci)", file=sys.stderr)
        return 2
    total_pct = args.threshold if args.threshold is not None else (
        gate.CI_TOTAL_PCT if args.ci else gate.DEFAULT_TOTAL_PCT)
    stage_pct = args.stage_default if args.stage_default is not None else (
        gate.CI_STAGE_PCT if args.ci else gate.DEFAULT_STAGE_PCT)
    try:
        th = gate.Thresholds(total_pct, stage_pct,
                             gate.parse_stage_thresholds(args.stage_threshold))
    except ValueError as exc:
        print(f"apkperf gate: {exc}", file=sys.stderr)
        return 2
    try:
        rows, _records, base, head = run_comparison(args, args.base, args.head, budget_s=budget)
    except ApkImageError as exc:
        print(f"apkperf gate: measurement failed: {exc}", file=sys.stderr)
        return 2
    print(format_rows(rows, describe(base), describe(head)))
    failures = gate.evaluate(rows, th)
    if args.json:
        args.json.write_text(json.dumps({
            "rows": [r.to_json() for r in rows],
            "failures": [f.describe() for f in failures],
        }, indent=1) + "\n")
    took = time.monotonic() - t0
    if failures:
        print(f"\nPERF GATE FAILED ({took:.0f} s):")
        for f in failures:
            print(f"  {f.describe()}")
        return 1
    print(f"\nperf gate passed ({len(rows)} rows, total threshold {th.total_pct:g}%, "
          f"stages {th.stage_pct:g}% unless set; {took:.0f} s)")
    return 0
