"""`apkimage` command line (subcommands in `builder/commands/`)."""

from __future__ import annotations

import argparse
import sys

from builder.clitool import build_parser as _build_parser
from builder.clitool import run_main

COMMANDS = ["verify", "index", "resolve", "build", "publish"]


def build_parser() -> argparse.ArgumentParser:
    return _build_parser("apkimage", "Build OCI images from APK packages.", "builder", COMMANDS)


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
