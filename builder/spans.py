"""Stage spans: wall and CPU time, bytes in/out and free-form attributes per pipeline stage.

The harness reads the JSON written by `apkimage build --spans FILE`:

    {"version": 1, "spans": [{"name": "fetch", "arch": "x86_64", "wall_s": 0.12, "cpu_s": 0.03,
      "bytes_in": 123, "bytes_out": 456, "attrs": {"impl": "reference", ...}}, ...],
     "total": {"wall_s": ..., "cpu_s": ...}}

Stage names are the fixed vocabulary of DESIGN.md §1 (`STAGES`). CPU time is the process's
(all threads), so stages that run in threads are accounted correctly.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

STAGES = (
    "config", "index", "resolve", "fetch", "expand", "install", "mutate",
    "layer", "compress", "sbom", "oci", "publish",
)


@dataclass
class Span:
    name: str
    arch: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    attrs: dict = field(default_factory=dict)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


class SpanRecorder:
    """Collects spans for one process. Use `with recorder.span("fetch", arch) as s: ...`."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._start_wall = time.perf_counter()
        self._start_cpu = _cpu()

    @contextmanager
    def span(self, name: str, arch: str = "", **attrs: object) -> Iterator[Span]:
        if name not in STAGES:
            raise ValueError(f"unknown stage name {name!r}")
        s = Span(name=name, arch=arch, attrs=dict(attrs))
        wall0, cpu0 = time.perf_counter(), _cpu()
        try:
            yield s
        finally:
            s.wall_s = time.perf_counter() - wall0
            s.cpu_s = _cpu() - cpu0
            self.spans.append(s)

    def to_json(self) -> dict:
        return {
            "version": 1,
            "spans": [asdict(s) for s in self.spans],
            "total": {
                "wall_s": time.perf_counter() - self._start_wall,
                "cpu_s": _cpu() - self._start_cpu,
            },
        }

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")
