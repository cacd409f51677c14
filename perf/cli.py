"""`apkperf` command line. Each subcommand lives in `perf/commands/<name>.py` and exposes
`add_parser(subparsers)` (registering itself, with `func=run`) and `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import sys

from builder.errors import ApkImageError

COMMANDS = [
    "corpus", "serve", "run", "compare", "gate", "calibrate", "flame", "trend", "history",
    "report",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apkperf", description="Time apkimage builds stage by stage."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"perf.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ApkImageError as exc:
        print(f"apkperf: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("apkperf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
