"""`apkperf frontier`: output bytes against throughput of every candidate compressor on a
workload's real layer tar (perf/frontier.py); stores the results under .perf/frontier/ and
draws the chart into the report directory."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from perf.frontier import (
    CANDIDATES,
    build_layer_tar,
    describe,
    format_table,
    recommend,
    render_chart,
    run_frontier,
    save_results,
    scratch_dir,
    select,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("frontier", help="compressor frontier (bytes vs MB/s) on a layer tar",
                       description=__doc__)
    p.add_argument("--workload", default="small", help="small, go, debian-go or a PATH")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    p.add_argument("--only", default=None, metavar="PATTERNS",
                   help="comma-separated name patterns, e.g. 'isal*,zlib-ng-mt:*' (zlib:6 "
                        "and isal-mt:1 are always measured); names: "
                        + ", ".join(c.name for c in CANDIDATES))
    p.add_argument("--tar", type=Path, default=None,
                   help="measure this uncompressed tar instead of building the workload")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--out", type=Path, default=None,
                   help="chart directory (default: <repo>/flamegraphs)")
    p.add_argument("--no-save", action="store_true", help="do not store under .perf/frontier")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from perf.gitrefs import repo_root
    from perf.workloads import prepare_workload

    root = repo_root()
    say = None if args.quiet else (lambda m: print(f"apkperf frontier: {m}", file=sys.stderr,
                                                   flush=True))
    work = scratch_dir()
    try:
        if args.tar:
            data = args.tar.read_bytes()
            source: dict[str, object] = {"source": str(args.tar)}
            name = args.workload if args.workload != "small" else args.tar.name
        else:
            t0 = time.perf_counter()
            workload = prepare_workload(args.workload, root / ".perf" / "workloads")
            prepared = time.perf_counter() - t0
            if say:
                say(f"workload {args.workload} ready in {prepared:.1f} s; building its layer")
            data, source = build_layer_tar(workload.config_path, work)
            source["prepare_s"] = round(prepared, 1)
            name = args.workload
        if say:
            say(f"layer tar {len(data) / 1e6:.1f} MB; measuring")
        doc = run_frontier(data, workload=name, repeat=args.repeat, source=source,
                           candidates=select(args.only), workdir=work, progress=say)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(describe(doc))
    print(format_table(doc))
    print("\n" + recommend(doc)["verdict"])
    if not args.no_save:
        print(f"stored {save_results(root / '.perf' / 'frontier', doc)}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    for path in render_chart(doc, args.out or root / "flamegraphs"):
        print(path)
    return 1 if any(r.get("error") for r in doc["results"]) else 0
