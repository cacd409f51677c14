"""`apkimage build CONFIG TAG OUT`: build the image(s) and write an OCI layout directory, or a
docker-loadable tarball when OUT ends in `.tar`.

The build runs in a temporary work directory; OUT appears only when everything succeeded.
`--spans FILE` writes the stage spans plus an "image" object (digests, impl choice);
`--json` prints that object to stdout. Progress goes to stderr only when it is a TTY.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import ConfigError
from builder.stages.profiles import LAYER_FORMATS, describe, parse_impl

if TYPE_CHECKING:  # what a build needs is loaded when one runs, not for --help
    from builder.artefacts import BuildResult
    from builder.plan import BuildOptions
    from builder.spans import SpanRecorder


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by build and publish (apko's names)."""
    p.add_argument("config", help="apko-style YAML image configuration")
    p.add_argument("--arch", action="append", default=[],
                   help="architecture(s) to build (repeat or comma-separate; overrides archs)")
    p.add_argument("-k", "--keyring-append", action="append", default=[], metavar="KEY",
                   help="extra public key (path) to trust")
    p.add_argument("-r", "--repository-append", action="append", default=[], metavar="REPO",
                   help="extra repository (build and runtime)")
    p.add_argument("-b", "--build-repository-append", action="append", default=[],
                   metavar="REPO", help="extra build-only repository")
    p.add_argument("-p", "--package-append", action="append", default=[], metavar="PKG",
                   help="extra package to install")
    p.add_argument("--annotations", action="append", default=[], metavar="KEY:VALUE",
                   help="image annotation (overrides the config's value for KEY)")
    p.add_argument("--build-date", default="", metavar="RFC3339",
                   help="image time floor (default epoch 0); SOURCE_DATE_EPOCH wins")
    p.add_argument("--offline", action="store_true",
                   help="use only the cache; any network access is an error")
    p.add_argument("--cache-dir", default=None, help="cache root (default ~/.cache/apkimage)")
    p.add_argument("--sbom-path", default=None, metavar="DIR",
                   help="write SPDX SBOMs (sbom-<arch>.spdx.json) into DIR")
    p.add_argument("--workdir", "-C", default=None, metavar="DIR",
                   help="resolve relative repository, keyring and include paths against DIR "
                        "(default: the working directory, as apko does)")
    p.add_argument("--impl", default="reference",
                   help="implementation profile and per-stage overrides, "
                        "e.g. reference | fast | stitched | reference,compress=zlib:9")
    p.add_argument("--layer-format", choices=LAYER_FORMATS, default=None,
                   help="sorted: apko's byte-compatible layer (the default of every profile); "
                        "stitched: package-ordered, built from the packages' own compressed "
                        "bytes (same tree; needs and selects the fast expand and install)")
    p.add_argument("--lockfile", default="", metavar="FILE",
                   help="install exactly the packages of this apko lockfile (`apkimage lock`),"
                        " each section verified against it; no APKINDEX is read")
    p.add_argument("--layer-cache", action="store_true",
                   help="reuse a layer an earlier build (of any image) made with the same "
                        "entries, packages, writer and compressor; record the layers made")
    p.add_argument("--spans", default=None, metavar="FILE", help="write stage spans JSON")
    p.add_argument("--json", action="store_true", help="print the image summary as JSON")
    p.add_argument("--ca-file", default=None, metavar="PEM",
                   help="CA bundle for HTTPS repositories/registries")
    p.add_argument("--allow-untrusted", action="store_true",
                   help="accept indexes whose signature cannot be verified")
    add_limit_flag(p)


def add_limit_flag(p: argparse.ArgumentParser) -> None:
    """`--limit NAME=VALUE` (builder/limits.py), repeatable; the CLI installs the limits
    before the command runs."""
    from builder.limits import help_text

    p.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                   help=help_text())


def epilog() -> str:
    return "stage implementations (--impl STAGE=NAME):\n" + describe()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build an image into an OCI layout or docker tarball",
                       description=__doc__, epilog=epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(p)
    p.add_argument("tag", help="image reference used for the docker tarball tags")
    p.add_argument("out", help="output: OCI layout directory, or FILE.tar")
    # argparse lists positionals in definition order: config, tag, out.
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    from builder.plan import BuildOptions

    return BuildOptions(
        config=args.config, tag=getattr(args, "tag", ""), archs=list(args.arch),
        keyring_append=list(args.keyring_append), repository_append=list(args.repository_append),
        build_repository_append=list(args.build_repository_append),
        package_append=list(args.package_append), annotations=list(args.annotations),
        build_date=args.build_date, offline=args.offline, cache_dir=args.cache_dir,
        sbom=args.sbom_path is not None, workdir=args.workdir, ca_file=args.ca_file,
        allow_untrusted=args.allow_untrusted, lockfile=args.lockfile,
        layer_cache=args.layer_cache,
        impl=parse_impl(args.impl, args.layer_format),
    )


def progress(msg: str) -> None:
    """An info line (shown on a terminal, or when piped with --log-level info)."""
    import logging

    logging.getLogger("builder.build").info("%s", msg)


def stage_lines(rec: SpanRecorder) -> None:
    """One info line per stage span: name (and arch, layer), seconds, bytes out."""
    import logging

    log = logging.getLogger("builder.build")
    if not log.isEnabledFor(logging.INFO):
        return
    for s in rec.spans:
        where = "/".join(x for x in (s.arch, str(s.attrs.get("layer", ""))) if x)
        size = "" if not s.bytes_out else (f" {s.bytes_out / 1e6:.2f} MB"
                                          if s.bytes_out >= 100_000 else
                                          f" {s.bytes_out / 1e3:.1f} kB")
        log.info("%s%s %.3f s%s", s.name, f" ({where})" if where else "", s.wall_s, size)


def finish(args: argparse.Namespace, rec: SpanRecorder, summary: dict[str, Any]) -> None:
    import json

    stage_lines(rec)

    if args.spans:
        doc = rec.to_json()
        doc["image"] = summary
        Path(args.spans).write_text(json.dumps(doc, indent=1) + "\n")
    if args.json:
        print(json.dumps(summary, indent=1))


def copy_sboms(result: BuildResult, sbom_path: str | None) -> None:
    if sbom_path is None:
        return
    import shutil

    dest = Path(sbom_path)
    dest.mkdir(parents=True, exist_ok=True)
    for p in result.sboms:
        shutil.copyfile(p, dest / p.name)


def run(args: argparse.Namespace) -> int:
    from builder import progress as status_line
    from builder.pipeline import build
    from builder.spans import SpanRecorder
    from builder.stages.registry import current
    from builder.util.atomic import work_directory

    opts = options_from_args(args)
    out = Path(args.out)
    if out.suffix != ".tar" and out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "oci-layout").exists():
        raise ConfigError(f"{out}: directory is not empty and is not an OCI layout")
    rec = SpanRecorder()
    # The work directory sits beside OUT, so the finished blobs are hardlinked, not copied,
    # into the output.
    parent = out.resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"{out}: parent directory {parent} does not exist")
    # A build killed with -9 leaves its work directory; the next one to OUT removes it.
    with work_directory(parent, f".{out.name}.work-") as tmp:
        progress(f"building {args.config}")
        rec.progress = status_line.for_build()
        try:
            result = build(opts, tmp, rec)
            with rec.span("oci", impl=opts.impl["oci"]) as s:
                write_output = current().get("oci", opts.impl["oci"]).obj
                s.bytes_out = write_output(result.images, result.index, result.layers, out,
                                           args.tag)
        finally:
            status_line.done()
        copy_sboms(result, args.sbom_path)
        progress(f"wrote {out} (index {result.index.digest})")
        finish(args, rec, result.summary())
    return 0
