"""What `apkimage` and `apkperf` share: subcommands as modules, one-line errors, exit codes.

Each subcommand lives in `<package>/commands/<name>.py` and exposes `add_parser(subparsers)`
(registering itself, with `func=run`) and `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from builder.errors import ApkImageError

# Options before the command that take a value (the value may look like a command name).
VALUED_GLOBALS = ("-C", "--workdir", "--log-level")


def build_parser(prog: str, description: str, package: str, commands: list[str],
                 *, helps: dict[str, str] | None = None,
                 argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every command's module loaded — or, given each command's one-line
    `helps`, only the module of the command `argv` names (the others are listed with their
    help), so start-up does not grow with the number of commands."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = None
    if helps is not None:
        words = iter(sys.argv[1:] if argv is None else argv)
        for word in words:
            if word in VALUED_GLOBALS:
                next(words, None)  # its value is not a command name
            elif word in commands:
                chosen = word
                break
    for name in commands:
        if helps is not None and name != chosen:
            sub.add_parser(name, help=helps[name])
            continue
        importlib.import_module(f"{package}.commands.{name.replace('-', '_')}").add_parser(sub)
    return parser


def run_main(parser: argparse.ArgumentParser, argv: list[str] | None,
             setup: Callable[[argparse.Namespace], object] | None = None,
             check: Callable[[argparse.Namespace], object] | None = None) -> int:
    """Parse and run; an ApkImageError is one `prog: error: …` line and exit status 1.
    `check(args)` may raise ValueError (a usage error, exit 2); `setup(args)` runs before
    the command (logging, -C) and may fail as the command does."""
    args = parser.parse_args(argv)
    if check is not None:
        try:
            check(args)
        except ValueError as exc:
            parser.error(str(exc))
    try:
        if setup is not None:
            setup(args)
        return int(args.func(args) or 0)
    except ApkImageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
