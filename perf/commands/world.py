"""`apkperf world`: build every image of a world (an image catalogue over one repository) per
variant, side by side, and record per-image spans and world totals (perf/worldrun.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("world", help="build the world: every image of a catalogue, per variant")
    p.add_argument("--workload", default="world",
                   help="world, world-small (optionally :SEED) or a directory of configs")
    p.add_argument("--scenario", default="world",
                   help="world, world-bump (comma separated; world-bump rebuilds the world "
                        "on the same cache after bumping one package)")
    p.add_argument("--impl", action="append", default=[],
                   help="variants, comma separated: impl profiles as apkperf run takes them, "
                        "+lc for the layer cache (default fast,stitched+lc)")
    lc = p.add_mutually_exclusive_group()
    lc.add_argument("--layer-cache", dest="layer_cache", action="store_true", default=None,
                    help="the layer cache for every variant")
    lc.add_argument("--no-layer-cache", dest="layer_cache", action="store_false",
                    help="no layer cache for any variant")
    p.add_argument("--mode", choices=("many", "single"), default="many",
                   help="many: one apkimage build-many process per world; single: one "
                        "apkimage build process per image")
    p.add_argument("--bump", default=None, metavar="PKG=VERSION",
                   help="the package world-bump bumps (default sqlite-libs=3.45.3-r1)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--tree", default=None,
                   help="git ref to measure, built in its own worktree and venv (default: "
                        "the working tree)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="build trees (default /dev/shm/apkperf-world when writable)")
    p.add_argument("--keep", action="store_true", help="keep the build trees and logs")
    p.add_argument("--no-save", action="store_true", help="do not store the record")
    p.add_argument("--json", type=Path, help="also write the record here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from builder import progress as status
    from perf.gitrefs import WORKTREE, prepare_tree, repo_root
    from perf.world import DEFAULT_BUMP, prepare_world
    from perf.worldrun import (
        SCENARIOS,
        WorldError,
        WorldJob,
        WorldPlan,
        default_work_root,
        format_table,
        parse_variants,
        save,
    )

    root = repo_root()
    scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            raise WorldError(f"--scenario {s!r}: known scenarios are {', '.join(SCENARIOS)}")
    bump = DEFAULT_BUMP
    if args.bump:
        name, sep, version = args.bump.partition("=")
        if not sep or not name or not version:
            raise WorldError(f"--bump {args.bump!r}: expected PACKAGE=VERSION")
        bump = (name, version)
    world = prepare_world(args.workload, root / ".perf" / "workloads")
    tree = prepare_tree(root, args.tree or WORKTREE)
    plan = WorldPlan(world, parse_variants(args.impl, args.layer_cache), scenarios,
                     repeat=args.repeat, mode=args.mode,
                     work_root=(args.work_dir or default_work_root(root)).resolve(),
                     bump=bump, keep=args.keep, argv0=tree.builder_argv(),
                     commit=tree.commit, dirty=tree.dirty)
    line = status.Progress(sys.stderr) if sys.stderr.isatty() else status.NULL

    def say(text: str) -> None:
        line.clear()
        print(text, flush=True)

    print(f"apkperf world: {world.name}, {len(world.configs)} images; scenarios "
          f"{','.join(scenarios)}; variants {' | '.join(v.name for v in plan.variants)}; "
          f"{args.repeat} round(s), mode {args.mode}, in {plan.work_root}; apkimage at "
          f"{tree.commit[:12]}{' (dirty)' if tree.dirty else ''}", flush=True)
    try:
        doc = WorldJob(plan, progress=line, say=say).run()
    finally:
        line.close()
    print(format_table(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if not args.no_save:
        print(f"\nrecord: {save(root, doc)}")
    return 1 if doc["checks"] else 0
