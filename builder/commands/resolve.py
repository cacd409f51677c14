"""`apkimage resolve CONFIG`: print the pinned install list (``name=version``, install order).

Runs the config, index and resolve stages only (no package is downloaded). With several
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
    p.add_argument("--workdir", "-C", default=None, metavar="DIR",
                   help="resolve relative repository/keyring paths against DIR")
    p.add_argument("--cache-dir", default=None, help="cache root (default ~/.cache/apkimage)")
    p.add_argument("--offline", action="store_true", help="use only cached indexes")
    p.add_argument("--ca-file", default=None, metavar="PEM")
    p.add_argument("--allow-untrusted", action="store_true",
                   help="accept indexes whose signature cannot be verified")
    p.add_argument("--json", action="store_true", help="print a JSON object per arch")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> dict[str, list[str]]:
    """apk arch -> pinned install list for the configuration named by `args`."""
    from builder.apk.signing import Keyring
    from builder.config import apk_arch, apply_overrides, build_repositories, load_config
    from builder.pipeline import _keys
    from builder.repo.fetch import Fetcher
    from builder.repo.indexes import load_indexes
    from builder.repo.repository import parse_repository
    from builder.resolve import resolve

    cfg = apply_overrides(
        load_config(args.config, args.workdir), archs=list(args.arch),
        keyring_append=list(args.keyring_append), repository_append=list(args.repository_append),
        package_append=list(args.package_append))
    keyring = Keyring()
    for name, pem in _keys(cfg):
        keyring.add(name, pem, name)
    repos = []
    for line in build_repositories(cfg):
        tag, _, where = line.rpartition(" ") if line.startswith("@") else ("", "", line)
        text = f"{tag} {cfg.resolve_local(where)}" if tag else cfg.resolve_local(where)
        repos.append(parse_repository(text, "repositories"))
    if not repos:
        raise ConfigError(f"{cfg.source_file}: contents.repositories: no repository given")
    world = list(cfg.contents.packages)
    if not world:
        raise ConfigError(f"{cfg.source_file}: contents.packages: no package given")
    out: dict[str, list[str]] = {}
    with Fetcher(args.cache_dir, offline=args.offline, ca_file=args.ca_file) as fetcher:
        for arch in cfg.archs:
            aarch = apk_arch(arch)
            available = load_indexes(repos, aarch, keyring, fetcher, args.allow_untrusted)
            out[aarch] = [f"{p.name}={p.version}" for p in resolve(world, available, aarch)]
    return out


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
