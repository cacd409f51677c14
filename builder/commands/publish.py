"""`apkimage publish CONFIG REF...`: build, then push the images and the index to a
registry under every REF; prints the index digest (`--json`: the image summary instead)."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.commands.build import (
    add_common_flags,
    copy_sboms,
    epilog,
    finish,
    options_from_args,
    progress,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="build an image and push it to a registry",
                       description=__doc__, epilog=epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(p)
    p.add_argument("refs", nargs="+", metavar="REF", help="registry/repo[:tag] to push to")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from builder import progress as status_line
    from builder.pipeline import build
    from builder.spans import SpanRecorder
    from builder.stages.registry import current
    from builder.util.atomic import work_directory

    opts = options_from_args(args)
    rec = SpanRecorder()
    # A publish killed with -9 leaves its work directory; the next publish removes it.
    with work_directory(Path(tempfile.gettempdir()), "apkimage-publish-") as tmp:
        progress(f"building {args.config}")
        rec.progress = status_line.for_build()
        try:
            result = build(opts, tmp, rec)
            with rec.span("publish", impl=opts.impl["publish"]) as s:
                publish = current().get("publish", opts.impl["publish"]).obj
                pushed = publish(result, list(args.refs))
                s.bytes_out = pushed.bytes_uploaded
                s.attrs.update(uploaded=len(pushed.uploaded), skipped=len(pushed.skipped))
        finally:
            status_line.done()
        copy_sboms(result, args.sbom_path)
        summary = result.summary()
        summary["pushed"] = {"uploaded": pushed.uploaded, "skipped": pushed.skipped}
        finish(args, rec, summary)
        if not args.json:
            print(pushed.index_digest)
    return 0
