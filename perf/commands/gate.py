"""`apkperf gate BASE`: exit 1 when the total or a stage is significantly slower than BASE by
more than its threshold (0 otherwise, 2 when the measurement itself failed). `--ci` picks
thresholds and a time budget suitable for a shared CI runner, and bases a regression cannot
step past (ci_bases): the code before HEAD's last code change (a docs commit after a slow one
does not hide it), the merge-base with the main branch, the last commit this machine's gate
passed, and the code CREEP_CHANGES code changes back (a creep of small slowdowns)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from builder.errors import ApkImageError
from perf import gate
from perf.compare import add_compare_options, describe, format_rows, run_comparison
from perf.gitrefs import (
    code_ancestors,
    head_state,
    is_ancestor,
    merge_base,
    repo_root,
    resolve,
)
from perf.machine import machine_id

CREEP_CHANGES = 5
MAIN_BRANCH = "main"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gate", help="fail when HEAD is significantly slower than BASE")
    p.add_argument("base", nargs="?", default=None,
                   help="git ref (--ci: default the bases described in `apkperf gate --help`)")
    p.add_argument("head", nargs="?", default=None, help="default: the working tree")
    p.add_argument("--threshold", type=float, default=None,
                   help=f"percent slowdown allowed for the total (default "
                        f"{gate.DEFAULT_TOTAL_PCT:g}, --ci {gate.CI_TOTAL_PCT:g}; --metric "
                        f"instructions {gate.INSTRUCTIONS_TOTAL_PCT:g})")
    p.add_argument("--stage-default", type=float, default=None,
                   help=f"percent allowed for stages not named by --stage-threshold (default "
                        f"{gate.DEFAULT_STAGE_PCT:g}, --ci {gate.CI_STAGE_PCT:g}; --metric "
                        f"instructions {gate.INSTRUCTIONS_STAGE_PCT:g})")
    p.add_argument("--stage-threshold", action="append", default=[], metavar="STAGE=PCT")
    p.add_argument("--ci", action="store_true",
                   help="CI mode: the code before HEAD's last code change, the merge-base "
                        f"with {MAIN_BRANCH}, the last gated commit and {CREEP_CHANGES} code "
                        "changes back as bases (passes when there is none); loose thresholds, "
                        "time budget")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds after which no new round starts (--ci default 240)")
    add_compare_options(p)
    p.set_defaults(func=run)


def ci_bases(root: Path, head: str = "HEAD", metric: str = "wall") -> list[tuple[str, str]]:
    """(sha, why) for every base --ci gates against, without duplicates, nearest first."""
    head_sha = resolve(root, head)
    found: list[tuple[str, str]] = []
    ancestors = code_ancestors(root, head, count=CREEP_CHANGES)
    if ancestors:
        found.append((ancestors[0], "the code before HEAD's last code change"))
    mb = merge_base(root, MAIN_BRANCH, head)
    if mb and mb != head_sha:
        found.append((mb, f"the merge-base with {MAIN_BRANCH}"))
    last = last_gated(root, metric)
    if last and last != head_sha:
        found.append((last, "the last commit this machine's gate passed"))
    if len(ancestors) == CREEP_CHANGES:
        found.append((ancestors[-1], f"{CREEP_CHANGES} code changes back (creep)"))
    first_reason: dict[str, str] = {}
    for sha, why in found:
        first_reason.setdefault(sha, why)
    return list(first_reason.items())


def _gate_file(root: Path, metric: str) -> Path:
    suffix = "" if metric == "wall" else f"-{metric}"
    return root / ".perf" / "gate" / f"{machine_id()}{suffix}.json"


def last_gated(root: Path, metric: str = "wall") -> str | None:
    """The last commit `gate --ci` (on this metric) passed at on this machine, if it is an
    ancestor of HEAD."""
    try:
        sha = json.loads(_gate_file(root, metric).read_text())["commit"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sha if is_ancestor(root, sha) else None


def record_gated(root: Path, head: str, metric: str = "wall") -> None:
    path = _gate_file(root, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"commit": resolve(root, head),
                                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")


def default_thresholds(metric: str, ci: bool) -> tuple[float, float]:
    """(total %, stage %): instruction counts are as tight in CI as at a desk."""
    if metric == "instructions":
        return gate.INSTRUCTIONS_TOTAL_PCT, gate.INSTRUCTIONS_STAGE_PCT
    if ci:
        return gate.CI_TOTAL_PCT, gate.CI_STAGE_PCT
    return gate.DEFAULT_TOTAL_PCT, gate.DEFAULT_STAGE_PCT


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    budget = args.budget
    if args.base is None and not args.ci:
        print("apkperf gate: BASE is required (or use --ci)", file=sys.stderr)
        return 2
    bases: list[tuple[str, str]] = [(args.base, "as asked")] if args.base else []
    if args.ci:
        if not bases:
            bases = ci_bases(repo_root(), args.head or "HEAD", args.metric)
            if not bases:
                print("apkperf gate --ci: no earlier code to compare with; passing")
                return 0
        if args.metric == "wall":
            args.min_abs = max(args.min_abs or 0.0, gate.CI_MIN_ABS_S)
        budget = budget if budget is not None else 240.0
    total_pct, stage_pct = default_thresholds(args.metric, args.ci)
    total_pct = args.threshold if args.threshold is not None else total_pct
    stage_pct = args.stage_default if args.stage_default is not None else stage_pct
    try:
        th = gate.Thresholds(total_pct, stage_pct,
                             gate.parse_stage_thresholds(args.stage_threshold))
    except ValueError as exc:
        print(f"apkperf gate: {exc}", file=sys.stderr)
        return 2
    failures: list[str] = []
    all_rows: list[dict] = []
    for base_ref, why in bases:
        print(f"== gate against {base_ref[:12]} ({why}) ==")
        try:
            rows, _records, base, head = run_comparison(args, base_ref, args.head,
                                                        budget_s=budget)
        except ApkImageError as exc:
            print(f"apkperf gate: measurement failed: {exc}", file=sys.stderr)
            return 2
        print(format_rows(rows, describe(base), describe(head)))
        found = gate.evaluate(rows, th)
        failures += [f"against {base_ref[:12]} ({why}): {f.describe()}" for f in found]
        gate.log_run(repo_root(), machine_id(), gate.log_entry(
            rows, found, base=base.tree.commit, why=why, head=head.tree.commit,
            dirty=head.tree.dirty, impl=head.impl, workload=args.workload, metric=args.metric,
            at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
        all_rows += [dict(r.to_json(), base=base_ref) for r in rows]
    if args.json:
        args.json.write_text(json.dumps({"rows": all_rows, "failures": failures},
                                        indent=1) + "\n")
    took = time.monotonic() - t0
    if failures:
        print(f"\nPERF GATE FAILED ({took:.0f} s):")
        for f in failures:
            print(f"  {f}")
        return 1
    if args.ci and args.head is None and not args.base:
        root = repo_root()
        if not head_state(root)[1]:  # only a clean tree is the commit it names
            record_gated(root, "HEAD", args.metric)
    print(f"\nperf gate passed ({len(all_rows)} rows against {len(bases)} base(s), total "
          f"threshold {th.total_pct:g}%, stages {th.stage_pct:g}% unless set; {took:.0f} s)")
    return 0
