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

import base64
import functools
import posixpath
from dataclasses import dataclass

from builder.apk.model import Package
from builder.errors import FormatError


@dataclass
class FileRecord:
    """One data-tar header as the installed db needs it."""

    path: str  # no leading "./" or "/", no trailing "/"
    is_dir: bool
    mode: int  # permission + special bits
    uid: int = 0
    gid: int = 0
    checksum: str = ""  # hex or Q1 form, "" if none


def q1_checksum(checksum: str, who: str = "") -> str:
    """`Q1`+base64 form of an APK-TOOLS.checksum.SHA1 value (hex or already Q1)."""
    if checksum.startswith("Q1"):
        return checksum
    try:
        raw = bytes.fromhex(checksum)
    except ValueError:
        raise FormatError(f"{who}: checksum {checksum!r} is neither hex nor Q1") from None
    return "Q1" + base64.b64encode(raw).decode()


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


def clean_file_list(files: list[FileRecord]) -> list[FileRecord]:
    """Sort (files before subdirectories within a directory) and drop orphans."""
    ordered = sorted(files, key=functools.cmp_to_key(_path_compare))
    dirs = {f.path.rstrip("/") for f in ordered if f.is_dir} | {"", "."}
    out = []
    for f in ordered:
        parent = posixpath.dirname(f.path.rstrip("/"))
        keep = True
        while parent not in ("", "."):
            if parent not in dirs:
                keep = False
                break
            parent = posixpath.dirname(parent)
        if keep:
            out.append(f)
    return out


def format_record(pkg: Package, files: list[FileRecord]) -> bytes:
    """One installed-db record including its trailing blank line."""
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
        lines.append(f"R:{posixpath.basename(f.path)}")
        if perm != 0o644 or f.uid or f.gid:
            lines.append(f"a:{f.uid}:{f.gid}:{perm:04o}")
        if f.checksum:
            lines.append(f"Z:{q1_checksum(f.checksum, str(pkg))}")
    return ("\n".join(lines) + "\n\n").encode()
