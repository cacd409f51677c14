"""`apkperf run`: measure builds of a workload per scenario and impl profile."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perf.gitrefs import WORKTREE, prepare_tree, repo_root
from perf.runner import Job, Plan, Side, format_run_table
from perf.scenarios import SCENARIOS, ScenarioError


def split_impls(values: list[str]) -> list[str]:
    """`reference,fast` is two profiles; `reference,compress=zlib:9` is one (items with `=`
    are per-stage overrides of the profile before them). --impl may also be repeated."""
    out: list[str] = []
    for value in values:
        for item in (i.strip() for i in value.split(",")):
            if not item:
                continue
            if "=" in item and out:
                out[-1] += "," + item
            else:
                out.append(item)
    return out or ["reference"]


def split_scenarios(value: str) -> list[str]:
    names = [s.strip() for s in value.split(",") if s.strip()]
    for n in names:
        if n not in SCENARIOS:
            raise ScenarioError(f"--scenario {n!r}: known scenarios are {', '.join(SCENARIOS)}")
    return names


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="time builds per scenario and impl (fresh process each)")
    p.add_argument("--workload", default="small", help="small, go, debian-go or a PATH")
    p.add_argument("--scenario", default="cold,hot,offline")
    p.add_argument("--impl", action="append", default=[],
                   help="impl profiles, comma separated (reference,fast); stage overrides "
                        "attach to the profile before them (reference,compress=zlib:9)")
    p.add_argument("--tree", default=WORKTREE, help="git ref to measure (default: working tree)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--latency-ms", type=int, default=0, help="per-request repository latency")
    p.add_argument("--bandwidth-mbit", type=float, default=0.0, help="per-connection bandwidth")
    p.add_argument("--tls", action="store_true", help="serve the repository over HTTPS")
    p.add_argument("--count-instructions", action="store_true",
                   help="count instructions per stage under valgrind's callgrind (~30x "
                        "slower; records kept apart from wall-time records)")
    p.add_argument("--keep", action="store_true", help="keep the run dir (outputs, logs)")
    p.add_argument("--no-save", action="store_true", help="do not store run records")
    p.add_argument("--json", type=Path, help="also write all records of this run here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from perf.workloads import prepare_workload

    root = repo_root()
    impls = split_impls(args.impl)
    tree = prepare_tree(root, args.tree)
    sides = [Side(impl, tree, impl) for impl in impls]
    counter = None
    if args.count_instructions:
        from perf import instructions

        why = instructions.unavailable()
        if why:
            print(f"apkperf run --count-instructions: {why}", file=sys.stderr)
            return 2
        counter = instructions.COUNTER
    workload = prepare_workload(args.workload, root / ".perf" / "workloads")
    plan = Plan(workload=args.workload, scenarios=split_scenarios(args.scenario), sides=sides,
                repeat=args.repeat, warmup=args.warmup, latency_ms=args.latency_ms,
                bandwidth_mbit=args.bandwidth_mbit, tls=args.tls,
                results_root=None if args.no_save else root / ".perf" / "results",
                work_root=root / ".perf" / "run", keep_outputs=args.keep, counter=counter)
    print(f"apkperf run: {workload.name} at {tree.commit[:12]}"
          f"{' (dirty)' if tree.dirty else ''}; scenarios {','.join(plan.scenarios)}; "
          f"impls {' | '.join(impls)}; {args.repeat} rounds after {args.warmup} warm-up")
    records = Job(plan, workload).run()
    print(format_run_table(records))
    if args.json:
        args.json.write_text(json.dumps(records, indent=1) + "\n")
    if not args.no_save and records:
        print(f"\nrecords stored under {root / '.perf' / 'results' / records[0]['machine_id']}")
    return 0
