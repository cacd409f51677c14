"""`apkperf compare BASE [HEAD]`: measure both trees in one interleaved job and print, per
scenario and stage, the HEAD/BASE ratio with its CI and a verdict."""

from __future__ import annotations

import argparse
import json

from perf.compare import add_compare_options, describe, format_rows, run_comparison


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare two git refs (or impl profiles) interleaved")
    p.add_argument("base", help="git ref (or WORKTREE)")
    p.add_argument("head", nargs="?", default=None,
                   help="git ref; default: the working tree including uncommitted changes")
    add_compare_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows, _records, base, head = run_comparison(args, args.base, args.head)
    print(format_rows(rows, describe(base), describe(head)))
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in rows], indent=1) + "\n")
    return 0
