"""`apkperf peers`: apkimage against the tools a user would reach for instead (tar | gzip,
tar | pigz, umoci repack, apk add + tar | pigz), interleaved on the same workload."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from perf.commands.run import split_impls
from perf.gitrefs import WORKTREE, prepare_tree, repo_root
from perf.peers import (
    DEFAULT_IMPLS,
    PEER_KEYS,
    PEER_SCENARIOS,
    PeersJob,
    PeersPlan,
    format_table,
    save_result,
)


def _names(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("peers", help="time apkimage against tar|gzip, tar|pigz, umoci repack "
                                     "and apk add, interleaved on one workload")
    p.add_argument("--workload", default="small", help="small, go, debian-go or a PATH")
    p.add_argument("--impl", action="append", default=[],
                   help=f"apkimage impl profiles, comma separated (default "
                        f"{','.join(DEFAULT_IMPLS)})")
    p.add_argument("--scenario", default=",".join(PEER_SCENARIOS),
                   help="apkimage scenarios: cold, hot or both")
    p.add_argument("--peers", default=",".join(PEER_KEYS),
                   help=f"which peers (default all: {','.join(PEER_KEYS)})")
    p.add_argument("--tree", default=WORKTREE, help="git ref to measure (default: working tree)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the run dir (trees, layers, logs)")
    p.add_argument("--no-save", action="store_true", help="do not store the result")
    p.add_argument("--json", type=Path, help="also write the result here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from perf.workloads import prepare_workload

    root = repo_root()
    tree = prepare_tree(root, args.tree)
    workload = prepare_workload(args.workload, root / ".perf" / "workloads")
    impls = split_impls(args.impl) if args.impl else list(DEFAULT_IMPLS)
    plan = PeersPlan(workload=args.workload, tree=tree, impls=impls,
                     scenarios=_names(args.scenario), peers=_names(args.peers),
                     repeat=args.repeat, warmup=args.warmup,
                     work_root=root / ".perf" / "peers-run",
                     results_root=None if args.no_save else root / ".perf" / "peers",
                     keep_outputs=args.keep,
                     tool_dirs=[root / ".venv" / "tools" / "bin"])
    job = PeersJob(plan, workload)
    print(f"apkperf peers: {workload.name} at {tree.commit[:12]}"
          f"{' (dirty)' if tree.dirty else ''}; apkimage {' | '.join(impls)} "
          f"({','.join(plan.scenarios)}); peers {','.join(plan.peers)}; {args.repeat} rounds "
          f"after {args.warmup} warm-up")
    doc = job.run_peers()
    print(format_table(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if plan.results_root is not None:
        print(f"\nresult stored as {save_result(plan.results_root, doc)}")
    if args.keep:
        print(f"run dir kept: {job.work}")
    return 0
