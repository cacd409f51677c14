"""`apkperf startup`: how long `apkimage` takes to start, per subcommand, and what its
imports cost (`python -X importtime` of `apkimage build --help`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perf.gitrefs import repo_root
from perf.startup import format_table, run_startup, save


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("startup", help="start-up time of apkimage per subcommand, imports")
    p.add_argument("--repeat", type=int, default=10, help="fresh processes per command")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    p.add_argument("--no-save", action="store_true", help="do not store the result")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = repo_root()
    result = run_startup(Path(sys.executable), root, args.repeat)
    print(format_table(result))
    if not args.no_save:
        print(f"stored {save(result, root)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0
