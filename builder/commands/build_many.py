"""`apkimage build-many CONFIG... --out-dir DIR`: build many images on one cache, each into the
OCI layout `DIR/<config stem>` (tagged `<stem>:latest`), one after another in this process
(`--executor local`), or on a Dask cluster (`--executor dask`: `--scheduler tcp://HOST:PORT`,
else a local cluster of `--workers N` processes, each on a cache of its own; builder/fanout.py).
With `--layer-cache` a layer one image made is reused by the others that have it;
`--content-store REGISTRY/REPO` shares the layers through a registry (implies
`--layer-cache`). `--publish REGISTRY/PREFIX` then pushes every image to
`REGISTRY/PREFIX/<config stem>:latest` as `publish` pushes one, each distinct blob uploaded
at most once across the world (a blob another image's repository got is mounted from it).
`--json` prints every image's digests, wall and CPU seconds and spans (and what was pushed),
and the totals.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from builder.stages.profiles import LAYER_FORMATS, parse_impl

if TYPE_CHECKING:
    from builder.many import ImageResult
    from builder.oci.publish import PublishedImage
    from builder.progress import NullProgress

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
    p.add_argument("--publish", default="", metavar="REGISTRY/PREFIX",
                   help="after the builds, push each image to REGISTRY/PREFIX/<config "
                        "stem>:latest (credentials from docker's config, as publish); a blob "
                        "is uploaded once per world, mounted into the other repositories")
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
    from builder.many import plan_jobs, run_local
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
    refs: list[str] = []
    if args.publish:  # every name checked before anything is built
        from builder.oci.publish import world_refs

        refs = world_refs([Path(j.out).name for j in jobs], args.publish)
    line = status_line.for_build()
    line.start("images")
    line.expect(len(jobs), 0, "images")

    def done(r: ImageResult) -> None:
        line.package_done(0)
        log.info("%s: %s (%.2f s, %.2f s CPU)", r.config, r.index_digest, r.wall_s, r.cpu_s)

    wall0, cpu0 = time.perf_counter(), time.process_time()
    published: list[PublishedImage] = []
    try:
        if args.executor == "dask":
            from builder.fanout import run_dask

            results = run_dask(jobs, done, scheduler=args.scheduler, workers=args.workers or 2)
        else:
            results = run_local(jobs, done)
        build_wall = time.perf_counter() - wall0
        if refs:
            published = _publish(args, results, refs, line)
    finally:
        status_line.done()
    # cpu_s: this process's; images_cpu_s: the builds' own (on the workers, with dask)
    total: dict[str, object] = {
        "images": len(results), "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0, "images_cpu_s": sum(r.cpu_s for r in results),
        "executor": args.executor}
    if refs:
        total["build_wall_s"] = build_wall
        total["published"] = {
            "images": len(published),
            "uploaded": sum(len(p.uploaded) for p in published),
            "mounted": sum(len(p.mounted) for p in published),
            "skipped": sum(len(p.skipped) for p in published),
            "bytes_uploaded": sum(p.bytes_uploaded for p in published)}
    if args.json:
        docs = [r.as_dict() for r in results]
        for doc, p in zip(docs, published, strict=False):
            doc["published"] = p.as_dict()
        print(json.dumps({"images": docs, "total": total}, indent=1))
    else:
        for n, r in enumerate(results):
            pushed = f"\t{published[n].ref}@{published[n].digest}" if published else ""
            print(f"{r.out}\t{r.index_digest}{pushed}")
    return 0


def _publish(args: argparse.Namespace, results: list[ImageResult], refs: list[str],
             line: NullProgress) -> list[PublishedImage]:
    """Push the built layouts (after every build: a failed build pushes nothing); with a
    content store on the same registry its layers are mounted from it, not sent again."""
    import logging

    from builder.oci.publish import WorldImage, publish_world
    from builder.oci.registry import parse_reference

    log = logging.getLogger("builder.build_many")
    world = [WorldImage(r.config, r.out, ref, r.index_digest)
             for r, ref in zip(results, refs, strict=True)]
    store = ""
    if args.content_store:
        s = parse_reference(args.content_store)
        if s.registry == parse_reference(refs[0]).registry:
            store = s.repository
    line.start("publish")
    line.expect(len(world), 0, "images")

    def done(w: WorldImage, p: PublishedImage) -> None:
        line.package_done(0)
        log.info("%s: pushed %s@%s (%d uploaded, %d mounted, %d present)", w.name, p.ref,
                 p.digest, len(p.uploaded), len(p.mounted), len(p.skipped))

    return publish_world(world, mount_store=store, done=done)
