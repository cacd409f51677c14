"""`apkimage resolve CONFIG`: print the pinned install list (``name=version``, install order).

Runs the config, index and resolve stages only (no package is downloaded): the build plan,
so the order printed is the order a build installs in. With several
architectures each list is headed by ``# <apk arch>``; ``--json`` prints
``{"<apk arch>": ["name=version", ...], ...}`` instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from builder.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resolve", help="print the resolved install list of a configuration",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="apko-style YAML image configuration")
    p.add_argument("--arch", action="append", default=[],
                   help="architecture(s) (repeat or comma-separate; overrides archs)")
    p.add_argument("-k", "--keyring-append", action="append", default=[], metavar="KEY")
    p.add_argument("-r", "--repository-append", action="append", default=[], metavar="REPO")
    p.add_argument("-p", "--package-append", action="append", default=[], metavar="PKG")
    add_source_flags(p)
    p.add_argument("--allow-untrusted", action="store_true",
                   help="accept indexes whose signature cannot be verified")
    p.add_argument("--json", action="store_true", help="print a JSON object per arch")
    p.set_defaults(func=run)


def add_source_flags(p: argparse.ArgumentParser) -> None:
    """Where a resolution reads from: the path base, the cache, offline, a CA."""
    p.add_argument("--workdir", "-C", default=None, metavar="DIR",
                   help="resolve relative repository, keyring and include paths against DIR "
                        "(default: the working directory, as apko does)")
    p.add_argument("--cache-dir", default=None, help="cache root (default ~/.cache/apkimage)")
    p.add_argument("--offline", action="store_true", help="use only cached indexes")
    p.add_argument("--ca-file", default=None, metavar="PEM")
    from builder.commands.build import add_limit_flag

    add_limit_flag(p)


def resolve_config(args: argparse.Namespace) -> dict[str, list[str]]:
    """apk arch -> pinned install list (the build plan's order) for the configuration
    named by `args`."""
    from builder.plan import BuildOptions, make_plan
    from builder.repo.fetch import Fetcher
    from builder.spans import SpanRecorder

    opts = BuildOptions(
        config=args.config, archs=list(args.arch), keyring_append=list(args.keyring_append),
        repository_append=list(args.repository_append),
        package_append=list(args.package_append), offline=args.offline,
        cache_dir=args.cache_dir, workdir=args.workdir, ca_file=args.ca_file,
        allow_untrusted=args.allow_untrusted)
    with Fetcher(args.cache_dir, offline=args.offline, ca_file=args.ca_file) as fetcher:
        plan, _ = make_plan(opts, SpanRecorder(), fetcher)
    return {a.apk_arch: [p.pin for p in a.packages] for a in plan.archs}


def run(args: argparse.Namespace) -> int:
    if not Path(args.config).is_file():
        raise ConfigError(f"{args.config}: configuration file not found")
    result = resolve_config(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for aarch, pinned in result.items():
        if len(result) > 1:
            print(f"# {aarch}")
        for line in pinned:
            print(line)
    return 0
