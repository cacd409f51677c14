"""Where the sections of an `.apk` are, found by reading only its head.

An `.apk` is [signature member] + control member + data section (one or more gzip members).
The signature and control members are small; finding their ends means inflating them (gzip
has no length field), but nothing of the data section needs to be read. That is enough to
compute the package's identity (`C:`, the SHA-1 of the control member), parse `.PKGINFO`,
and know the byte range of the data section for `datahash` or for reusing its blocks.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder import limits
from builder.apk.pkginfo import parse_pkginfo
from builder.deflate.gzipstream import GZIP_MAGIC
from builder.errors import FormatError
from builder.util.filememo import FileMemo

HEAD_CHUNK = 1 << 16  # read size for the signature and control members
OUT_LIMIT = 1 << 20  # most inflated bytes per call (a member's output is counted)
MIN_APK_SIZE = 20


@dataclass(frozen=True)
class ApkLayout:
    """Where the sections of one `.apk` are, and its control section."""

    path: Path
    size: int  # whole file
    control_start: int
    control_end: int  # = first byte of the data section
    control_sha1: bytes
    control_tar: bytes  # the control member, inflated (a tar without end marker)

    @property
    def key(self) -> str:
        """Hex SHA-1 of the control member: the cache key (what `C:` encodes)."""
        return self.control_sha1.hex()

    @property
    def data_size(self) -> int:
        return self.size - self.control_end


def _read_member(f: BinaryIO, start: int, source: str) -> tuple[bytes, bytes]:
    """(inflated content, compressed bytes) of the small gzip member at `start`. Its output
    is counted as it is made: past the control-size limit it is a LimitError (a signature
    or control member is a few KiB; one that inflates without end is refused, not held)."""
    f.seek(start)
    d = zlib.decompressobj(31)
    comp: list[bytes] = []
    out: list[bytes] = []
    total = 0
    try:
        while not d.eof:
            chunk = f.read(HEAD_CHUNK)
            if not chunk:
                raise FormatError(f"{source}: truncated gzip member at byte {start}")
            if not comp and chunk[:2] != GZIP_MAGIC:
                raise FormatError(f"{source}: not a gzip member at byte {start}")
            comp.append(chunk)
            pending = chunk
            while True:
                piece = d.decompress(pending, OUT_LIMIT)
                total += len(piece)
                limits.check(source, f"inflated gzip member at byte {start}", "control-size",
                             total)
                out.append(piece)
                pending = d.unconsumed_tail
                if d.eof or (not pending and len(piece) < OUT_LIMIT):
                    break
    except zlib.error as exc:
        raise FormatError(f"{source}: corrupt gzip member at byte {start}: {exc}") from None
    raw = b"".join(comp)
    return b"".join(out), raw[: len(raw) - len(d.unused_data)]


def check_apk_size(size: int, source: str) -> None:
    """Smaller than two empty gzip members: not an `.apk` (one check for every reader)."""
    if size < MIN_APK_SIZE:
        raise FormatError(f"{source}: too short to be an .apk ({size} bytes)")


def tar_members(raw: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Entries and contents of a small truncated tar (signature or control section; they
    have no end marker, so one is added). Raises tarfile.TarError."""
    out: list[tuple[tarfile.TarInfo, bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(raw + b"\0" * 1024), mode="r:") as tf:
        for ti in tf:
            f = tf.extractfile(ti) if ti.isfile() else None
            out.append((ti, f.read() if f is not None else b""))
    return out


# The layouts found in this process, by path and file identity: fetch's verification and the
# expand stage both need the head of every package; it is read and inflated once per process
# while the file is unchanged (builder/util/filememo.py).
_LAYOUTS: FileMemo[ApkLayout] = FileMemo()


def read_layout(path: Path) -> ApkLayout:
    """Find the control member of the `.apk` at `path` (reads only the head of the file).
    A file read before in this process, unchanged since, is not read again."""
    known, snap = _LAYOUTS.get(str(path), (path,))
    if known is not None:
        return known
    with open(path, "rb") as f:
        layout = _read_layout(f, path, os.fstat(f.fileno()).st_size)
    _LAYOUTS.put(snap, layout)
    return layout


def _read_layout(f: BinaryIO, path: Path, size: int) -> ApkLayout:
    source = str(path)
    check_apk_size(size, source)
    first, first_raw = _read_member(f, 0, source)
    try:
        items = tar_members(first)
    except (tarfile.TarError, OverflowError) as exc:  # (Overflow: a size past any seek)
        raise FormatError(f"{source}: first section is not a tar: {exc}") from None
    has_sig = bool(items) and items[0][0].name.startswith(".SIGN.")
    if has_sig:
        start = len(first_raw)
        if start >= size:
            raise FormatError(f"{source}: signed package without control and data sections")
        control, control_raw = _read_member(f, start, source)
    else:
        start, control, control_raw = 0, first, first_raw
    end = start + len(control_raw)
    if end >= size:
        raise FormatError(f"{source}: no data section after the control section")
    return ApkLayout(path, size, start, end, hashlib.sha1(control_raw).digest(), control)


def read_pkginfo(layout: ApkLayout) -> tuple[dict[str, list[str]],
                                             list[tuple[tarfile.TarInfo, bytes]]]:
    """(.PKGINFO fields, the other control entries with their contents)."""
    return read_control(layout.control_tar, str(layout.path))


def read_control(control_tar: bytes, source: str) -> tuple[dict[str, list[str]],
                                                           list[tuple[tarfile.TarInfo, bytes]]]:
    """The inflated control section -> (.PKGINFO fields, the other control entries with
    their contents). The one control-section reader: every entry must be a dot file
    (`.PKGINFO`, scripts, `.melange.yaml`...) and `.PKGINFO` UTF-8; anything else is a
    FormatError naming `source`."""
    try:
        items = tar_members(control_tar)
    except (tarfile.TarError, OverflowError) as exc:  # (Overflow: a size past any seek)
        raise FormatError(f"{source}: malformed control tar: {exc}") from None
    text = None
    rest = []
    for ti, data in items:
        name = ti.name.removeprefix("./")
        if not name.startswith("."):
            raise FormatError(f"{source}: unexpected {name!r} in control section")
        if name == ".PKGINFO":
            try:
                text = data.decode()
            except UnicodeDecodeError as exc:
                raise FormatError(f"{source}: .PKGINFO is not UTF-8: {exc}") from None
        else:
            rest.append((ti, data))
    if text is None:
        raise FormatError(f"{source}: control section has no .PKGINFO")
    return parse_pkginfo(text, f"{source}:.PKGINFO"), rest
