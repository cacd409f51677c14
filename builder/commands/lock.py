"""`apkimage lock CONFIG`: apko's lockfile (`apko.lock.json`, builder/lock.py) — every package of
every arch with the byte range and checksum of each section of its `.apk`. Resolves as a build
does and reads each package once (from the cache when it is there)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    from builder.commands.resolve import add_source_flags

    p = sub.add_parser("lock", help="write apko's lockfile for a configuration",
                       description=__doc__)
    p.add_argument("config", help="apko-style YAML image configuration")
    p.add_argument("--output", "-o", default=None, metavar="FILE",
                   help="default: the config's name with .lock.json for .yaml")
    p.add_argument("--arch", action="append", default=[],
                   help="architecture(s) (repeat or comma-separate; overrides archs)")
    p.add_argument("--include-paths", action="append", default=[], metavar="DIR",
                   help="where else to look for the config file (apko's flag)")
    add_source_flags(p)
    p.set_defaults(func=run)


def default_output(config: str) -> Path:
    base = config[: -len(".yaml")] if config.endswith(".yaml") else config
    return Path(base + ".lock.json")


def make_lock(args: argparse.Namespace) -> dict[str, Any]:
    from builder import lock
    from builder.config import find_config
    from builder.plan import BuildOptions, make_plan, read_keys
    from builder.repo.fetch import Fetcher
    from builder.spans import SpanRecorder
    from builder.stages.registry import current

    path = find_config(args.config, list(args.include_paths))
    opts = BuildOptions(config=str(path), archs=list(args.arch), offline=args.offline,
                        cache_dir=args.cache_dir, workdir=args.workdir, ca_file=args.ca_file)
    fetch = current().get("fetch", "reference").obj
    with Fetcher(args.cache_dir, offline=args.offline, ca_file=args.ca_file) as fetcher:
        plan, planned = make_plan(opts, SpanRecorder(), fetcher)
        cfg = planned.cfg
        written = lock.configured_repositories(cfg)
        packages = []
        for arch in plan.archs:
            ordered = planned.packages[arch.apk_arch]
            files = fetch(ordered, arch.apk_arch, fetcher, None)
            for pkg in ordered:
                data = Path(files[pkg.name]).read_bytes()
                packages.append(lock.package_entry(
                    pkg.name, pkg.version, arch.apk_arch, written[pkg.repository],
                    lock.Sections.of(data, str(files[pkg.name])), pkg.checksum))
    keys = dict(read_keys(cfg))
    keyring = sorted(({"name": lock.strip_scheme(k), "url": k,
                       "content": keys[k.rstrip("/").rsplit("/", 1)[-1]].decode()}
                      for k in cfg.contents.keyring), key=lambda e: e["name"])

    def repos(lines: list[str]) -> list[dict[str, str]]:
        return [lock.repo_entry(line, a.apk_arch) for a in plan.archs for line in lines]

    chain = [Path(p).read_bytes() for p in cfg.sources]
    return {"version": lock.VERSION,
            "config": {"name": args.config, "checksum": lock.config_checksum(chain)},
            "contents": {"keyring": keyring,
                         "build_repositories": repos(cfg.contents.build_repositories),
                         "runtime_repositories": repos(cfg.contents.runtime_repositories),
                         "repositories": repos(cfg.contents.repositories),
                         "packages": packages}}


def run(args: argparse.Namespace) -> int:
    from builder import lock
    from builder.util.atomic import write_bytes

    out = Path(args.output) if args.output else default_output(args.config)
    write_bytes(out, lock.dumps(make_lock(args)))
    print(out)
    return 0
