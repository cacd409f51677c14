"""`apkimage build-many CONFIG... --out-dir DIR`: build many images on one cache, each into the
OCI layout `DIR/<config stem>` (tagged `<stem>:latest`), one after another in this process
(`--executor local`), or on a Dask cluster (`--executor dask`: `--scheduler tcp://HOST:PORT`,
else a local cluster of `--workers N` processes, each on a cache of its own; builder/fanout.py).
With `--layer-cache` a layer one image made is reused by the others that have it;
`--content-store REGISTRY/REPO` shares the layers through a registry (implies
`--layer-cache`). `--json` prints every image's digests, wall and CPU seconds and spans, and
the totals.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.stages.profiles import LAYER_FORMATS, parse_impl

EXECUTORS = ("local", "dask")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-many", help="build many images on one cache",
                       description=__doc__)
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="apko-style YAML configs")
    p.add_argument("--out-dir", required=True, metavar="DIR",
                   help="one OCI layout per config: DIR/<config stem>")
    p.add_argument("--impl", default="reference", help="implementation profile (as build's)")
    p.add_argument("--layer-format", choices=LAYER_FORMATS, default=None)
    p.add_argument("--layer-cache", action="store_true",
                   help="reuse layers made before, by any image (builder/layercache.py)")
    p.add_argument("--arch", action="append", default=[], help="architecture(s) to build")
    p.add_argument("--build-date", default="", metavar="RFC3339")
    p.add_argument("--cache-dir", default=None, help="cache root (default ~/.cache/apkimage)")
    p.add_argument("--offline", action="store_true", help="use only the cache")
    p.add_argument("--ca-file", default=None, metavar="PEM")
    p.add_argument("--no-sbom", action="store_true", help="write no SBOMs")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where the builds run (local: here, one after another; dask: on a "
                        "Dask cluster, needs the `world` extra)")
    p.add_argument("--scheduler", default="", metavar="ADDR",
                   help="dask: the scheduler of a running cluster (tcp://HOST:PORT); "
                        "default: start a local cluster")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="dask, local cluster: worker processes (default 2), each on its own "
                        "cache <cache>/worker-<n>")
    p.add_argument("--content-store", default="", metavar="REGISTRY/REPO",
                   help="share finished layers through this registry repository (record "
                        "and blob looked up before a layer is built, pushed once after)")
    p.add_argument("--json", action="store_true",
                   help="print {images: [...], total: {wall_s, cpu_s, images}}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    import os
    import time

    from builder import progress as status_line
    from builder.errors import ConfigError
    from builder.many import ImageResult, plan_jobs, run_local
    from builder.plan import BuildOptions

    log = logging.getLogger("builder.build_many")
    options = BuildOptions(config="", archs=list(args.arch), build_date=args.build_date,
                           offline=args.offline, cache_dir=args.cache_dir, ca_file=args.ca_file,
                           sbom=not args.no_sbom,
                           layer_cache=args.layer_cache or bool(args.content_store),
                           content_store=args.content_store,
                           impl=parse_impl(args.impl, args.layer_format))
    if args.executor != "dask" and (args.scheduler or args.workers is not None):
        raise ConfigError("--scheduler and --workers apply to --executor dask only")
    configs, out_dir = args.configs, Path(args.out_dir)
    if args.executor == "dask":  # other processes, maybe other working directories
        configs, out_dir = [os.path.abspath(c) for c in configs], out_dir.absolute()
        if options.cache_dir is not None:
            options.cache_dir = os.path.abspath(options.cache_dir)
    jobs = plan_jobs(configs, out_dir, options)
    line = status_line.for_build()
    line.start("images")
    line.expect(len(jobs), 0, "images")

    def done(r: ImageResult) -> None:
        line.package_done(0)
        log.info("%s: %s (%.2f s, %.2f s CPU)", r.config, r.index_digest, r.wall_s, r.cpu_s)

    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        if args.executor == "dask":
            from builder.fanout import run_dask

            results = run_dask(jobs, done, scheduler=args.scheduler, workers=args.workers or 2)
        else:
            results = run_local(jobs, done)
    finally:
        status_line.done()
    # cpu_s: this process's; images_cpu_s: the builds' own (on the workers, with dask)
    total = {"images": len(results), "wall_s": time.perf_counter() - wall0,
             "cpu_s": time.process_time() - cpu0, "images_cpu_s": sum(r.cpu_s for r in results),
             "executor": args.executor}
    if args.json:
        print(json.dumps({"images": [r.as_dict() for r in results], "total": total},
                         indent=1))
    else:
        for r in results:
            print(f"{r.out}\t{r.index_digest}")
    return 0
