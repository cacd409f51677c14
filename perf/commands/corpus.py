"""`apkperf corpus synthetic|debian --out DIR`: generate a benchmark package repository."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from perf.corpus import CorpusInfo


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "corpus", help="generate a signed APK repository + apko.yaml for benchmarks",
        description="Generate a benchmark corpus: a signed APK repository and an apko config.",
    )
    kinds = p.add_subparsers(dest="corpus_kind", required=True)

    syn = kinds.add_parser("synthetic", help="synthetic packages shaped like the Wolfi go image")
    syn.add_argument("--out", required=True, type=Path, help="output directory")
    syn.add_argument("--preset", default="small", choices=["small", "go"])
    syn.add_argument("--seed", type=int, default=1)
    syn.add_argument("--repo-url", help="repository URL for apko.yaml (default: the out path)")
    syn.add_argument("-q", "--quiet", action="store_true")
    syn.set_defaults(func=run)

    deb = kinds.add_parser("debian", help="Debian packages (apt-get download) converted to APKs")
    deb.add_argument("--out", required=True, type=Path, help="output directory")
    deb.add_argument("--preset", default="small", choices=["small", "go"])
    deb.add_argument("--packages", nargs="+", help="top-level Debian packages (overrides preset)")
    deb.add_argument("--cache-dir", type=Path,
                     help="download/conversion cache (default: .perf/debian-cache)")
    deb.add_argument("--repo-url", help="repository URL for apko.yaml (default: the out path)")
    deb.add_argument("-q", "--quiet", action="store_true")
    deb.set_defaults(func=run)


def _summary(info: CorpusInfo, out: Path) -> str:
    t = info.totals
    return (f"{info.kind} corpus {info.preset!r} in {out}: {t['packages']} packages, "
            f"{t['files']} files, {t['installed_bytes'] / 1e6:.1f} MB uncompressed, "
            f"{t['apk_bytes'] / 1e6:.1f} MB of .apk (ratio {t['ratio']:.3f}), "
            f"{info.seconds:.1f} s; config {out / 'apko.yaml'}")


def run(args: argparse.Namespace) -> int:
    progress = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.corpus_kind == "synthetic":
        from perf.corpus.synthetic import generate

        info = generate(args.out, args.preset, args.seed, args.repo_url, progress)
    else:
        from perf.corpus.debian import DEFAULT_CACHE, convert_corpus

        info = convert_corpus(args.out, args.preset, args.packages,
                              args.cache_dir or DEFAULT_CACHE, args.repo_url, progress)
    print(_summary(info, args.out.resolve()))
    return 0
