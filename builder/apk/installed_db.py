"""The installed database (`usr/lib/apk/db/installed`) as apko writes it, byte for byte.

Per package: `P V A L T o m U D p`, `r` only when the package replaces something, `c i t S I
k`, `C` when there is a checksum, then the file list, then a blank line. `i:` is written as
Go's `%s` of a string slice (`i:[]`, `i:[a b]`). The file list comes from the package's data
tar headers: stable-sorted so that within a directory non-directories come before
subdirectories, entries whose parent directory is not listed are dropped, then `F:` for
directories (`M:uid:gid:mode` unless 0:0:0755), `R:` for everything else (`a:` unless
0:0:0644, `Z:Q1<b64 sha1>` when the header carries a checksum). A non-directory before any
directory forces a bare `F:`.
"""

from __future__ import annotations

import functools
import posixpath
from typing import NamedTuple

from builder.apk.model import Package
from builder.util.checksums import q1, q1_checksum


class FileRecord(NamedTuple):
    """One data-tar header as the installed db needs it (a NamedTuple: one is made per file
    of every image, and records are compared and hashed whole, see `format_record`)."""

    path: str  # no leading "./" or "/", no trailing "/"
    is_dir: bool
    mode: int  # permission + special bits
    uid: int = 0
    gid: int = 0
    checksum: str = ""  # hex or Q1 form, "" if none


def _path_compare(a: FileRecord, b: FileRecord) -> int:
    at = posixpath.normpath(a.path).split("/")
    bt = posixpath.normpath(b.path).split("/")
    if at == bt:
        return 0
    n = 0
    while n < len(at) - 1 and n < len(bt) - 1:
        if at[n] != bt[n]:
            return -1 if at[n] < bt[n] else 1
        n += 1
    a_dir = n + 1 < len(at) or a.is_dir
    b_dir = n + 1 < len(bt) or b.is_dir
    if a_dir == b_dir:
        return (at[n] > bt[n]) - (at[n] < bt[n])
    return -1 if not a_dir else 1


def _is_clean(path: str) -> bool:
    """True when `posixpath.normpath(path) == path` is certain (no empty, `.` or `..`
    component, not absolute)."""
    return bool(path) and path[0] != "/" and path[0] != "." and path[-1] != "/" \
        and "//" not in path and "/." not in path


def _order_key(f: FileRecord) -> str:
    """A string whose order is `_path_compare`'s, except that a directory sorts before the
    paths under it (which `_path_compare` calls equal): components joined by NUL, each
    prefixed by \\x01 if it is a directory (every component but the last, and the last
    when the record is a directory), \\x00 otherwise. Names must not contain \\x00 or \\x01."""
    p = f.path
    if _is_clean(p):
        if f.is_dir:
            return "\x01" + p.replace("/", "\x00\x01")
        head, _, base = p.rpartition("/")
        return "\x01" + head.replace("/", "\x00\x01") + "\x00\x00" + base if head \
            else "\x00" + base
    parts = posixpath.normpath(p).split("/")
    last = len(parts) - 1
    return "\x00".join(("\x01" if i < last or f.is_dir else "\x00") + c
                        for i, c in enumerate(parts))


def _sorted_by_key(files: list[FileRecord]) -> list[FileRecord] | None:
    """`sorted(files, key=cmp_to_key(_path_compare))`, computed with a string key, or None
    when that is not provably the same list.

    `_path_compare` orders like `_order_key` except for pairs it calls equal where the key
    does not: a directory and a path under it, or a directory and a non-directory with the
    same path. The sort only ever asks whether a later element is less than an earlier one,
    so its decisions — and its result — are the key's as long as no such pair appears in
    the input with the directory (the key's smaller element) later. That is checked here in
    one pass; package data tars list directories before their contents, so it holds."""
    if not files:
        return []
    dirs: set[str] = set()  # normalised paths of directory records seen so far
    above: set[str] = set()  # strict ancestors of every record seen so far
    keys = []
    for f in files:
        p = f.path
        if "\x00" in p or "\x01" in p:
            return None
        if _is_clean(p):
            norm = p
            if f.is_dir:
                key = "\x01" + p.replace("/", "\x00\x01")
            else:
                head, _, base = p.rpartition("/")
                key = "\x01" + head.replace("/", "\x00\x01") + "\x00\x00" + base if head \
                    else "\x00" + base
        else:
            norm = posixpath.normpath(p)
            key = _order_key(f)
        if f.is_dir:
            if norm in above:
                return None
            dirs.add(norm)
        elif norm in dirs:
            return None
        up = norm
        while "/" in up:
            up = up.rpartition("/")[0]
            if up in above:
                break
            above.add(up)
        keys.append(key)
    order = sorted(range(len(files)), key=keys.__getitem__)
    return [files[i] for i in order]


def clean_file_list(files: list[FileRecord]) -> list[FileRecord]:
    """Sort (files before subdirectories within a directory) and drop orphans."""
    ordered = _sorted_by_key(files)
    if ordered is None:
        ordered = sorted(files, key=functools.cmp_to_key(_path_compare))
    dirs = {f.path.rstrip("/") for f in ordered if f.is_dir} | {"", "."}
    known: dict[str, bool] = {}  # parent -> every directory above it is listed
    out = []
    for f in ordered:
        p = f.path
        # posixpath.dirname of a clean path is what precedes its last "/"
        parent = p.rpartition("/")[0] if _is_clean(p) else posixpath.dirname(p.rstrip("/"))
        keep = known.get(parent)
        if keep is None:
            keep = True
            walked = []
            while parent not in ("", "."):
                done = known.get(parent)
                if done is not None:
                    keep = done
                    break
                walked.append(parent)
                if parent not in dirs:
                    keep = False
                    break
                parent = posixpath.dirname(parent)
            # every walked parent shares the outcome: each one's chain is a suffix of this
            for w in walked:
                known[w] = keep
        if keep:
            out.append(f)
    return out


# Records made in this process, by everything they are made from: every image holding a
# package gives it the same record unless a conflict took files from it.
_RECORDS: dict[tuple[object, ...], bytes] = {}
_RECORDS_MAX = 8192


def format_record(pkg: Package, files: list[FileRecord]) -> bytes:
    """One installed-db record including its trailing blank line."""
    key = (pkg.name, pkg.version, pkg.arch, pkg.license, pkg.description, pkg.origin,
           pkg.maintainer, pkg.url, tuple(pkg.depends), tuple(pkg.provides),
           tuple(pkg.replaces), pkg.commit, tuple(pkg.install_if), pkg.build_time, pkg.size,
           pkg.installed_size, pkg.provider_priority, pkg.checksum, tuple(files))
    record = _RECORDS.get(key)
    if record is None:
        if len(_RECORDS) >= _RECORDS_MAX:
            _RECORDS.clear()
        record = _RECORDS[key] = _format_record(pkg, files)
    return record


def _format_record(pkg: Package, files: list[FileRecord]) -> bytes:
    lines = [
        f"P:{pkg.name}", f"V:{pkg.version}", f"A:{pkg.arch}", f"L:{pkg.license}",
        f"T:{pkg.description}", f"o:{pkg.origin}", f"m:{pkg.maintainer}", f"U:{pkg.url}",
        f"D:{' '.join(pkg.depends)}", f"p:{' '.join(pkg.provides)}",
    ]
    if pkg.replaces:
        lines.append(f"r:{' '.join(pkg.replaces)}")
    lines += [
        f"c:{pkg.commit}", f"i:[{' '.join(pkg.install_if)}]", f"t:{pkg.build_time}",
        f"S:{pkg.size}", f"I:{pkg.installed_size}", f"k:{pkg.provider_priority or 0}",
    ]
    if pkg.checksum:
        lines.append(f"C:{pkg.checksum}")
    top_needed = True
    who = ""
    for f in clean_file_list(files):
        perm = f.mode & 0o7777
        if f.is_dir:
            lines.append(f"F:{f.path.rstrip('/')}")
            if perm != 0o755 or f.uid or f.gid:
                lines.append(f"M:{f.uid}:{f.gid}:{perm:04o}")
            top_needed = False
            continue
        if top_needed:
            lines.append("F:")
            top_needed = False
        lines.append(f"R:{f.path.rpartition('/')[2]}")
        if perm != 0o644 or f.uid or f.gid:
            lines.append(f"a:{f.uid}:{f.gid}:{perm:04o}")
        c = f.checksum
        if c:
            if len(c) == 40 and not c.startswith("Q1"):
                try:  # the usual hex form, converted inline
                    lines.append(f"Z:{q1(bytes.fromhex(c))}")
                    continue
                except ValueError:
                    pass
            who = who or str(pkg)
            lines.append(f"Z:{q1_checksum(c, who)}")
    return ("\n".join(lines) + "\n\n").encode("utf-8", "surrogateescape")
