"""`apkperf` command line (subcommands in `perf/commands/`)."""

from __future__ import annotations

import argparse
import sys

from builder.clitool import build_parser as _build_parser
from builder.clitool import run_main

COMMANDS = [
    "corpus", "serve", "run", "compare", "gate", "calibrate", "flame", "trend", "history",
    "report", "frontier",
    "peers", "startup", "world",
]


def build_parser() -> argparse.ArgumentParser:
    return _build_parser("apkperf", "Time apkimage builds stage by stage.", "perf", COMMANDS)


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
