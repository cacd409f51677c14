"""`apkperf serve DIR`: serve a package repository on 127.0.0.1 until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from perf.serve import RepoServer


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a repository directory over HTTP(S) with optional shaping",
        description="Serve DIR on 127.0.0.1 (ETag, Range, keep-alive). Prints the URL (and the "
                    "CA file with --tls) on the first lines, then runs until interrupted.",
    )
    p.add_argument("dir", help="repository directory (contains <arch>/APKINDEX.tar.gz)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--tls", action="store_true",
                   help="HTTPS with a generated CA (ca.pem written next to --log)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before every response")
    p.add_argument("--bandwidth-mbit", type=float, default=0.0,
                   help="per-connection bandwidth cap in Mbit/s (0 = unlimited)")
    p.add_argument("--cut", type=float, default=0.0, metavar="FRACTION",
                   help="flaky link: the first whole answer for each file sends only this "
                        "fraction of its body, then hangs up (0 = off)")
    p.add_argument("--log", help="append a JSON line per request to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with RepoServer(args.dir, port=args.port, tls=args.tls, latency_ms=args.latency_ms,
                        bandwidth_mbit=args.bandwidth_mbit, cut=args.cut,
                        log_path=args.log) as srv:
            print(srv.url, flush=True)
            if srv.ca_path is not None:
                print(f"ca-file: {srv.ca_path}", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
