"""Stage spans: wall and CPU time, bytes in/out and free-form attributes per pipeline stage.

The harness reads the JSON written by `apkimage build --spans FILE`:

    {"version": 1, "spans": [{"name": "fetch", "arch": "x86_64", "wall_s": 0.12, "cpu_s": 0.03,
      "bytes_in": 123, "bytes_out": 456, "attrs": {"impl": "reference", ...}}, ...],
     "total": {"wall_s": ..., "cpu_s": ...}}

Stage names are the fixed vocabulary of DESIGN.md §1 (`STAGES`); a `startup` span (process
start to the first stage) comes first. CPU time is the process's (all threads), so stages
that run in threads are accounted correctly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from builder.progress import NULL, NullProgress

STARTUP = "startup"  # process start to the first stage: not a pipeline stage
SPAWN_ENV = "APKPERF_SPAWN_NS"
# Set by the harness when it counts instructions (perf/instructions.py): every span start and
# end then calls getpgrp(2), on which valgrind's callgrind dumps its counters, and the marks
# are listed in the spans file so the dumps can be told apart.
MARKS_ENV = "APKPERF_STAGE_MARKS"
STAGES = (
    "config", "index", "resolve", "fetch", "expand", "install", "mutate",
    "layer", "compress", "sbom", "oci", "publish",
)


class Span:
    """One stage's measurement (a plain class: this module is loaded for `--help`)."""

    __slots__ = ("name", "arch", "wall_s", "cpu_s", "bytes_in", "bytes_out", "attrs")

    def __init__(self, name: str, arch: str = "", attrs: dict | None = None) -> None:
        self.name, self.arch = name, arch
        self.wall_s = self.cpu_s = 0.0
        self.bytes_in = self.bytes_out = 0
        self.attrs: dict = attrs if attrs is not None else {}

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


def _cpu() -> float:
    """This process's CPU seconds, all threads (ns clock: os.times() counts 10 ms ticks,
    which rounds most spans to 0 or 10 ms)."""
    return time.process_time()


def process_age_s() -> tuple[float, str]:
    """Seconds since this process started, and how that was known: `APKPERF_SPAWN_NS` (the
    harness's CLOCK_MONOTONIC reading just before it spawned us; exact), else the kernel's
    start time in /proc/self/stat (clock ticks, 10 ms here)."""
    spawned = os.environ.get(SPAWN_ENV, "")
    if spawned.isdigit():
        return (time.monotonic_ns() - int(spawned)) / 1e9, "spawn"
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        started = int(fields[19]) / ticks  # field 22 of stat(5): starttime, since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started, "proc"
    except (OSError, ValueError, IndexError):
        return 0.0, "unknown"


_STATUS_FIELDS = {b"VmHWM:": "peak_mb", b"VmRSS:": "rss_mb", b"RssAnon:": "anon_mb",
                  b"RssFile:": "file_mb"}


def memory_mb() -> dict[str, float]:
    """Peak and current resident set of this process, in MB (/proc/self/status): `anon_mb`
    is heap and thread stacks, `file_mb` file pages mapped in (the mmapped data tars and
    .apk files, the interpreter's own files)."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                key = _STATUS_FIELDS.get(line.split(None, 1)[0])
                if key:
                    out[key] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return {}
    return out


def _fault_hooks() -> Any:
    """builder/faults.py when `APKIMAGE_FAULT_KILL` asks for a fault, else None."""
    if not os.environ.get("APKIMAGE_FAULT_KILL"):
        return None
    from builder import faults

    return faults


class SpanRecorder:
    """Collects spans for one process. Use `with recorder.span("fetch", arch) as s: ...`.

    When the first stage starts, a `startup` span is recorded before it: from process start
    (`process_age_s`) to that moment — interpreter, imports, argument parsing — with the CPU
    the process used until then."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        # After each span: the process's peak and current memory (what holds the peak).
        self.memory: list[dict] = []
        self._start_wall = time.perf_counter()
        self._start_cpu = _cpu()
        self.marks: list[str] | None = [] if os.environ.get(MARKS_ENV) == "1" else None
        # Crash tests kill the build at a chosen point of a stage (builder/faults.py).
        self._faults = _fault_hooks()
        # The status line stages are shown on (builder/progress.py; NULL when not shown).
        self.progress: NullProgress = NULL

    def _mark(self, what: str) -> None:
        if self._faults is not None:
            self._faults.mark(what)
        if self.marks is not None:
            self.marks.append(what)
            os.getpgrp()  # callgrind's --dump-before point; nothing else here calls it

    def _record_startup(self) -> None:
        age, source = process_age_s()
        s = Span(name=STARTUP, attrs={"clock": source})
        s.wall_s, s.cpu_s = age, _cpu()
        self.spans.append(s)
        self._note_memory(s)

    def _note_memory(self, s: Span) -> None:
        mem = memory_mb()
        if mem:
            self.memory.append({"name": s.name, "arch": s.arch, **mem})

    @contextmanager
    def span(self, name: str, arch: str = "", **attrs: object) -> Iterator[Span]:
        if name not in STAGES:
            raise ValueError(f"unknown stage name {name!r}")
        if not self.spans:
            self._record_startup()
        s = Span(name=name, arch=arch, attrs=dict(attrs))
        self._mark(f"start {name}")
        self.progress.start(name, arch)
        wall0, cpu0 = time.perf_counter(), _cpu()
        try:
            yield s
        finally:
            s.wall_s = time.perf_counter() - wall0
            s.cpu_s = _cpu() - cpu0
            self._mark(f"end {name}")
            self.progress.end()
            self.spans.append(s)
            self._note_memory(s)

    def to_json(self) -> dict:
        doc = {
            "version": 1,
            "spans": [s.as_dict() for s in self.spans],
            "memory": self.memory,
            "total": {
                "wall_s": time.perf_counter() - self._start_wall,
                "cpu_s": _cpu() - self._start_cpu,
            },
        }
        if self.marks is not None:
            doc["marks"] = self.marks
        return doc

    def write(self, path: str | Path) -> None:
        import json

        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")
