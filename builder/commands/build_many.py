"""`apkimage build-many CONFIG... --out-dir DIR`: build many images on one cache, each into the
OCI layout `DIR/<config stem>` (tagged `<stem>:latest`), one after another in this process
(`--executor local`). With `--layer-cache` a layer one image made is reused by the others that
have it. `--json` prints every image's digests, wall and CPU seconds and spans, and the totals.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.stages.profiles import LAYER_FORMATS, parse_impl

EXECUTORS = ("local",)


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
                   help="where the builds run (local: here, one after another)")
    p.add_argument("--json", action="store_true",
                   help="print {images: [...], total: {wall_s, cpu_s, images}}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    import time

    from builder import progress as status_line
    from builder.many import ImageResult, plan_jobs, run_local
    from builder.plan import BuildOptions

    log = logging.getLogger("builder.build_many")
    options = BuildOptions(config="", archs=list(args.arch), build_date=args.build_date,
                           offline=args.offline, cache_dir=args.cache_dir, ca_file=args.ca_file,
                           sbom=not args.no_sbom, layer_cache=args.layer_cache,
                           impl=parse_impl(args.impl, args.layer_format))
    jobs = plan_jobs(args.configs, Path(args.out_dir), options)
    line = status_line.for_build()
    line.start("images")
    line.expect(len(jobs), 0, "images")

    def done(r: ImageResult) -> None:
        line.package_done(0)
        log.info("%s: %s (%.2f s, %.2f s CPU)", r.config, r.index_digest, r.wall_s, r.cpu_s)

    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        results = run_local(jobs, done)
    finally:
        status_line.done()
    total = {"images": len(results), "wall_s": time.perf_counter() - wall0,
             "cpu_s": time.process_time() - cpu0}
    if args.json:
        print(json.dumps({"images": [r.as_dict() for r in results], "total": total},
                         indent=1))
    else:
        for r in results:
            print(f"{r.out}\t{r.index_digest}")
    return 0
