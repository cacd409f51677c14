"""Fault injection for the tests of crash safety: a build that kills itself (SIGKILL, as
`kill -9` would) at a chosen point inside a chosen stage.

`APKIMAGE_FAULT_KILL=<stage>:<n>` arms it (unset, every hook is one attribute test). From the
start of the span of `<stage>` until another stage's span starts (builder/spans.py calls
`mark`) — the stage and the work that follows it before the next stage, such as recording a
layer in the layer cache after `compress` — every fault point counts, and the process dies
at the n-th one. Fault points are:

- every atomic file commit (builder/util/atomic.py), just before the rename: the temp file is
  whole and fsync'd, its final name not there yet — a package download, a data tar, a tar
  index, a manifest, a stamp, an index record, a blob;
- every registry request that would change the registry (builder/oci/registry.py: an upload
  session opened, a blob sent, a manifest or tag put), just before it is sent;
- the end of the stage's span itself, so a stage that writes nothing through the hooks above
  (a layer streamed into the work directory, a hot fetch) still dies with its work done but
  not yet handed to the next stage.

So `fetch:1` dies with the first downloaded package not yet in the cache, `expand:2` after
one artefact of a fresh expansion is committed and before its second, `layer:1` with the layer
written into the build's work directory and not compressed or moved into the output. The
counting is process-wide and thread-safe; with several arches a stage runs once per arch and
the count goes on across them.
"""

from __future__ import annotations

import _thread
import os
import signal

ENV = "APKIMAGE_FAULT_KILL"

_stage = ""  # the stage the plan names ("" when unarmed)
_target = 0  # kill at this many fault points
_active = False  # the named stage's span is running
_count = 0
_lock = _thread.allocate_lock()


def arm_from_env() -> None:
    """Read `APKIMAGE_FAULT_KILL`; a malformed value is ignored (the variable is for tests)."""
    global _stage, _target
    stage, _, n = os.environ.get(ENV, "").partition(":")
    if stage and n.isdigit() and int(n) > 0:
        _stage, _target = stage, int(n)


def armed() -> bool:
    return bool(_stage)


def mark(what: str) -> None:
    """A span mark (`start <stage>` / `end <stage>`, builder/spans.py)."""
    edge, _, name = what.partition(" ")
    if edge == "start":
        stage_started(name)
    elif edge == "end":
        stage_ended(name)


def stage_started(name: str) -> None:
    global _active
    _active = name == _stage


def stage_ended(name: str) -> None:
    if name == _stage:
        point()


def point() -> None:
    """A fault point: the process is killed here when it is the planned one."""
    global _count
    if not _active:
        return
    with _lock:
        _count += 1
        hit = _count == _target
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)


arm_from_env()
