"""Verification stamps: "this file, unchanged since, passed its full content check".

A hot build must not trust cached bytes blindly (DESIGN.md invariant 5), but re-hashing
hundreds of MB on every build to learn that nothing changed is most of a hot build's I/O.
A stamp records, after a full check, the file's identity — device, inode, size, mtime_ns and
ctime_ns — together with the facts that were checked (e.g. the datahash a package's data
section hashed to, the CRC-32 a data tar had). A later check whose file still has that exact
identity, and whose facts are the same, is skipped.

Why that is sound: any change to a file's bytes through the filesystem sets its ctime to the
current time, and ctime cannot be set by any file API (`os.utime` restores mtime, but sets
ctime to now); replacing the file (rename, copy) changes the inode or ctime; truncation or
growth changes the size. So a same-size in-place rewrite with the mtime put back is still
caught. One race remains, the one git calls "racily clean": timestamps are coarse (a
filesystem tick, up to seconds on some filesystems), so a write in the same tick as the
last change could leave ctime unchanged. A stamp is therefore only written when the file's
ctime is at least `SETTLE_NS` older than the moment the full check began, and the file's
identity was the same before and after the check; any later write then gets a newer ctime.

What a stamp does not guard against: damage below the filesystem (bit rot on the medium,
writes to the raw device) and someone who can set the system clock back and also write the
cache (who could as well rewrite the stamp). The stamp lives beside the other cache
artefacts and is written atomically; a missing, unreadable or mismatching stamp only means
the full check runs again (and writes a fresh stamp when it passes).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from builder.util.atomic import write_bytes

SETTLE_NS = 2_000_000_000  # a file changed more recently than this is not stamped


def identity(st: os.stat_result) -> dict[str, int]:
    """The fields of `st` that any change to the file's content alters."""
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def is_stamped(stamp: Path, st: os.stat_result, facts: dict[str, Any]) -> bool:
    """True when `stamp` vouches for the file whose current stat is `st` with these
    `facts` (what the full check would have established)."""
    try:
        doc = json.loads(stamp.read_bytes())
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict) or doc.get("file") != identity(st):
        return False
    if doc.get("facts") != facts:
        return False
    started = doc.get("checked_ns")
    return isinstance(started, int) and st.st_ctime_ns + SETTLE_NS <= started


def check_started() -> int:
    """The time to pass to `write_stamp` (take it before the full check begins)."""
    return time.time_ns()


def write_stamp(stamp: Path, before: os.stat_result, after: os.stat_result,
                facts: dict[str, Any], started_ns: int) -> bool:
    """Record a passed full check of a file whose stat was `before` when the check began
    and `after` when it ended. Nothing is written (False) if the file changed meanwhile or
    changed too recently to be told apart from a later write."""
    if identity(before) != identity(after) or before.st_ctime_ns + SETTLE_NS > started_ns:
        return False
    doc = {"file": identity(before), "facts": facts, "checked_ns": started_ns}
    # Temp file + rename, without the fsyncs of `Cache.write_bytes`: a stamp lost or torn
    # by a crash is just not a stamp (the full check runs again), and a hot build that
    # stamps every package should not wait for the disk ~100 times.
    try:
        write_bytes(stamp, json.dumps(doc, sort_keys=True).encode(), durable=False)
    except OSError:  # a read-only cache still builds, without stamps (not a CacheError)
        return False
    return True
