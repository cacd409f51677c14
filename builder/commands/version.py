"""`apkimage version`: this tool's version (also `apkimage --version`)."""

from __future__ import annotations

import argparse


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("apkimage")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the version")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import platform

    info = {"name": "apkimage", "version": version(),
            "python": platform.python_version(), "platform": platform.platform()}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"apkimage {info['version']} (Python {info['python']}, {info['platform']})")
    return 0
