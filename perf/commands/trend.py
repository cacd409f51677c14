"""`apkperf trend`: PNG + SVG charts of total and per-stage time over commits."""

from __future__ import annotations

import argparse
from pathlib import Path

from perf.gitrefs import commit_dates, repo_root
from perf.machine import machine_id
from perf.records import load_records
from perf.trend import render_trends


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trend", help="charts of stage times over commits from stored results")
    p.add_argument("--workload", default=None, help="only this workload")
    p.add_argument("--all-machines", action="store_true",
                   help="include records from other machines (default: this machine only)")
    p.add_argument("--out", type=Path, default=None, help="default: <repo>/flamegraphs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = repo_root()
    filters = {} if args.all_machines else {"machine_id": machine_id()}
    if args.workload:
        filters["workload"] = args.workload
    records = load_records(root / ".perf" / "results", **filters)
    if not records:
        print("apkperf trend: no stored results (run `apkperf run` or `apkperf history`)")
        return 1
    dates = commit_dates(root, sorted({r["commit"] for r in records}))
    # (dates has every record's commit)
    for path in render_trends(records, args.out or root / "flamegraphs", dates.__getitem__):
        print(path)
    return 0
