"""`apkimage` command line (subcommands in `builder/commands/`)."""

from __future__ import annotations

import argparse
import sys

from builder.clitool import build_parser as _build_parser
from builder.clitool import run_main

# One line each, for the command list; a command's module is loaded only when it runs.
HELPS = {
    "verify": "verify .apk packages or APKINDEX.tar.gz files",
    "index": "write DIR/APKINDEX.tar.gz for the .apk files in DIR",
    "resolve": "print the resolved install list of a configuration",
    "show-packages": "the packages a configuration would install",
    "show-config": "print the configuration as loaded",
    "lock": "write apko's lockfile for a configuration",
    "build": "build an image into an OCI layout or docker tarball",
    "build-minirootfs": "build the image filesystem as a tar.gz",
    "build-many": "build many images on one cache",
    "publish": "build an image and push it to a registry",
    "dot": "the dependency graph in Graphviz dot",
    "clean": "remove the cache directory",
    "install-keys": "discover and install keys for all repositories",
    "version": "print the version",
}
COMMANDS = list(HELPS)


class _Version(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from builder.commands.version import version

        print(f"apkimage {version()}")
        parser.exit()


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = _build_parser("apkimage", "Build OCI images from APK packages.", "builder",
                           COMMANDS, helps=HELPS, argv=argv)
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
    if getattr(args, "limit", None):
        from builder.limits import parse

        parse(args.limit)  # a wrong --limit is a usage error


def _setup(args: argparse.Namespace) -> None:
    from builder.logs import configure  # (logging is not loaded for --help)

    configure(args.log_level)
    if hasattr(args, "limit"):  # each run starts from the defaults (main may run twice)
        from builder.limits import install, parse

        install(parse(args.limit))
    if args.global_workdir:
        import os

        from builder.errors import ConfigError

        try:
            os.chdir(args.global_workdir)
        except OSError as exc:
            raise ConfigError(f"failed to change dir to {args.global_workdir}: "
                              f"{exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(argv), argv, setup=_setup, check=_check)


if __name__ == "__main__":
    sys.exit(main())
