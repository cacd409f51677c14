"""`apkperf history A..B`: backfill results for past commits, each measured in its own
worktree and venv. Commits with stored results for the same workload/scenario/impl are
skipped unless --force; a commit whose build fails is reported and skipped."""

from __future__ import annotations

import argparse

from builder.errors import ApkImageError
from perf.commands.run import split_impls, split_scenarios
from perf.gitrefs import prepare_tree, repo_root, rev_list
from perf.machine import machine_id
from perf.records import load_records
from perf.runner import Job, Plan, Side


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="measure past commits (A..B) in worktrees")
    p.add_argument("range", help="A..B (first-parent commits after A up to B) or one ref")
    p.add_argument("--workload", default="small")
    p.add_argument("--scenario", default="hot")
    p.add_argument("--impl", action="append", default=[])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--force", action="store_true", help="re-measure commits already stored")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from perf.workloads import prepare_workload

    root = repo_root()
    results = root / ".perf" / "results"
    impls = split_impls(args.impl)
    scenarios = split_scenarios(args.scenario)
    workload = prepare_workload(args.workload, root / ".perf" / "workloads")
    commits = rev_list(root, args.range)
    print(f"apkperf history: {len(commits)} commit(s), {','.join(scenarios)}, {' | '.join(impls)}")
    failed = 0
    for sha in commits:
        have = load_records(results, machine_id=machine_id(), commit=sha, dirty=False,
                            workload=workload.name)
        todo = [s for s in scenarios
                if args.force or not all(any(r["scenario"] == s and r["impl"] == i for r in have)
                                         for i in impls)]
        if not todo:
            print(f"{sha[:12]}: already measured, skipped")
            continue
        try:
            tree = prepare_tree(root, sha)
            plan = Plan(workload=args.workload, scenarios=todo,
                        sides=[Side(i, tree, i) for i in impls], repeat=args.repeat,
                        warmup=args.warmup, results_root=results, work_root=root / ".perf" / "run")
            recs = Job(plan, workload, log=lambda _m: None).run()
            print(f"{sha[:12]}: {len(recs)} runs stored")
        except ApkImageError as exc:
            failed += 1
            print(f"{sha[:12]}: not measured: {exc}")
    return 1 if failed == len(commits) and commits else 0
