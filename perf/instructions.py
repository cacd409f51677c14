"""Instruction counts per build and per stage, from valgrind's callgrind: a signal that does
not move with the machine's load, so a gate on it can use a threshold of a few percent where
wall time on a shared 2-core runner needs 25 %.

The build runs under `valgrind --tool=callgrind --dump-before=getpgrp` with the builder's
stage marks on (builder/spans.py `MARKS_ENV`): each span start and end calls getpgrp(2), so
callgrind writes one dump per mark (`OUT.1` … `OUT.N`, each holding the instructions since
the previous dump) and `OUT` at exit. The spans file lists the marks in order, which says
which stage each dump belongs to. Instructions of threads count (callgrind sums them);
those of child processes do not (`--trace-children=no`).

Counting is deterministic up to the interpreter's hash seed (fixed here) and a few thousand
instructions of thread scheduling; `apkperf calibrate --metric instructions` measures it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from builder.spans import MARKS_ENV, STARTUP
from perf.scenarios import ScenarioError

COUNTER = "callgrind"
MARK_FUNCTION = "getpgrp"
# What runs between stages (the build's own bookkeeping, writing the spans file, exit).
BETWEEN = "between"
# A build with no stage marks (a tree older than them) is one count.
UNMARKED = "unmarked"
# The interpreter's hash seed changes dict/set layouts and so the instructions; fixed.
ENV = {MARKS_ENV: "1", "PYTHONHASHSEED": "0"}

_SUMMARY = re.compile(rb"^summary:\s+(\d+)", re.M)


def unavailable() -> str | None:
    """Why instructions cannot be counted here, or None."""
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (Debian: apt-get install valgrind)"
    return None


def prefix(out_file: Path) -> list[str]:
    """The argv prefix that runs a build under callgrind, dumping to out_file[.N]."""
    return ["valgrind", "--tool=callgrind", "-q", "--trace-children=no",
            f"--dump-before={MARK_FUNCTION}", "--dump-line=no", "--dump-instr=no",
            "--compress-strings=no", "--compress-pos=no", f"--callgrind-out-file={out_file}"]


def _summary(path: Path) -> int:
    try:
        m = _SUMMARY.search(path.read_bytes())
    except OSError as exc:
        raise ScenarioError(f"callgrind wrote no readable dump {path}: {exc}") from exc
    if m is None:
        raise ScenarioError(f"callgrind dump {path} has no 'summary:' line")
    return int(m.group(1))


def attribute(parts: list[int], marks: list[str]) -> dict[str, int]:
    """Instructions per stage from the dumps (part i ends at mark i, the last one at exit):
    a part goes to the innermost stage open during it, the first to `startup`, parts outside
    every stage after that to `between`."""
    if len(parts) != len(marks) + 1:
        raise ScenarioError(f"callgrind wrote {len(parts)} dumps for {len(marks)} stage marks "
                            f"(want {len(marks) + 1}): did something else call "
                            f"{MARK_FUNCTION}()?")
    out: dict[str, int] = {}
    open_stages: list[str] = []
    for i, count in enumerate(parts):
        where = open_stages[-1] if open_stages else (STARTUP if i == 0 else BETWEEN)
        out[where] = out.get(where, 0) + count
        if i == len(marks):
            break
        event, _, name = marks[i].partition(" ")
        if event == "start":
            open_stages.append(name)
        elif event == "end" and open_stages and open_stages[-1] == name:
            open_stages.pop()
        else:
            raise ScenarioError(f"stage mark #{i + 1} {marks[i]!r} does not close the open "
                                f"stage {open_stages[-1] if open_stages else 'none'}")
    return out


def read_counts(out_file: Path, marks: list[str]) -> dict[str, int]:
    """Per-stage instructions of one counted build; the dump files are removed."""
    files = [out_file.with_name(f"{out_file.name}.{i}") for i in range(1, len(marks) + 1)]
    files.append(out_file)
    extra = sorted(p.name for p in out_file.parent.glob(f"{out_file.name}.*")
                   if p not in files)
    if extra:
        raise ScenarioError(f"callgrind wrote more dumps than the build marked stages: "
                            f"{', '.join(extra[:3])}")
    try:
        return attribute([_summary(p) for p in files], marks)
    finally:
        for p in files:
            p.unlink(missing_ok=True)


def read_total(out_file: Path) -> dict[str, int]:
    """The whole build's instructions, for a builder that marks no stages (one dump)."""
    extra = sorted(p.name for p in out_file.parent.glob(f"{out_file.name}.*"))
    try:
        if extra:
            raise ScenarioError(f"callgrind wrote stage dumps ({extra[0]}) for a build that "
                                "listed no stage marks")
        return {UNMARKED: _summary(out_file)}
    finally:
        out_file.unlink(missing_ok=True)
