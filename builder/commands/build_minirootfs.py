"""`apkimage build-minirootfs CONFIG OUT.tar.gz`: the image filesystem as one gzip'ed tar (the
image's layer, no OCI wrapper), for one architecture (`--build-arch`, default the host's;
the config's archs are ignored, as apko ignores them)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from builder.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from builder.commands.build import add_common_flags

    p = sub.add_parser("build-minirootfs", help="build the image filesystem as a tar.gz",
                       description=__doc__)
    add_common_flags(p)
    p.add_argument("out", help="output .tar.gz")
    p.add_argument("--build-arch", default=os.uname().machine,
                   help="architecture to build (default: this machine's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import shutil
    import tempfile

    from builder.commands.build import options_from_args
    from builder.pipeline import build, layered
    from builder.spans import SpanRecorder
    from builder.util.atomic import AtomicFile

    args.arch = [args.build_arch]
    opts = options_from_args(args)
    out = Path(args.out)
    parent = out.absolute().parent
    if not parent.is_dir():
        raise ConfigError(f"{out}: parent directory {parent} does not exist")
    rec = SpanRecorder()
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.work-", dir=parent) as tmp:
        result = build(opts, Path(tmp), rec)
        if layered(result.config):
            raise ConfigError(f"{args.config}: layering: a minirootfs is one tar; build it "
                              "from a configuration without layering")
        layer = result.archs[0].layers[0]
        with AtomicFile(parent) as f, open(layer.path, "rb") as src:
            shutil.copyfileobj(src, f.file)
            f.commit(out)
    logging.getLogger(__name__).info("wrote minirootfs to %s", out)
    print(out)
    return 0
