"""`apkperf report`: write flamegraphs/index.html (latest table, stage bars, benchmarks,
trends with a page per commit, gate marks, machine, profile links) and, when there are world
records, flamegraphs/world.html."""

from __future__ import annotations

import argparse
from pathlib import Path

from perf import bench, gate, worldrun
from perf.gitrefs import commit_dates, commit_subjects, repo_root
from perf.machine import machine_id
from perf.records import load_records
from perf.report import write_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write flamegraphs/index.html (and world.html)")
    p.add_argument("--out", type=Path, default=None, help="default: <repo>/flamegraphs")
    p.add_argument("--all-machines", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = repo_root()
    filters = {} if args.all_machines else {"machine_id": machine_id()}
    records = load_records(root / ".perf" / "results", **filters)
    world_docs = worldrun.load(root, None if args.all_machines else machine_id())
    shas = sorted({r["commit"] for r in records} | {d["commit"] for d in world_docs})
    dates = commit_dates(root, shas)
    subjects = commit_subjects(root, shas)
    index = write_report(records, args.out or root / "flamegraphs", lambda c: dates.get(c, 0),
                         gate_runs=gate.load_runs(root, machine_id()),
                         bench_runs=bench.load_runs(root), subject=lambda c: subjects.get(c, ""),
                         world_docs=world_docs)
    print(index)
    return 0
