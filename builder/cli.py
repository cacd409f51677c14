"""`apkimage` command line (subcommands in `builder/commands/`)."""

from __future__ import annotations

import argparse
import sys

from builder.clitool import build_parser as _build_parser
from builder.clitool import run_main

COMMANDS = ["verify", "index", "resolve", "show-packages", "show-config", "lock", "build",
            "build-minirootfs", "publish", "dot", "clean", "version"]


class _Version(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from builder.commands.version import version

        print(f"apkimage {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _build_parser("apkimage", "Build OCI images from APK packages.", "builder",
                           COMMANDS)
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version")
    parser.add_argument("-C", "--workdir", dest="global_workdir", default=None, metavar="DIR",
                        help="change to DIR before anything else (apko's -C)")
    parser.add_argument("--log-level", default=None, metavar="LEVEL",
                        help="debug, info, warn or error (default: info on a terminal, warn "
                             "when stderr is piped)")
    return parser


def _check(args: argparse.Namespace) -> None:
    if args.log_level is not None:
        from builder.logs import parse_level

        parse_level(args.log_level)


def _setup(args: argparse.Namespace) -> None:
    from builder.logs import configure  # (logging is not loaded for --help)

    configure(args.log_level)
    if args.global_workdir:
        import os

        from builder.errors import ConfigError

        try:
            os.chdir(args.global_workdir)
        except OSError as exc:
            raise ConfigError(f"failed to change dir to {args.global_workdir}: "
                              f"{exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), argv, setup=_setup, check=_check)


if __name__ == "__main__":
    sys.exit(main())
