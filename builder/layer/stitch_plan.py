"""The stitched layer's plan: which bytes of each package's data tar its stream keeps, and the
final stretch (builder/layer/stitched.py says why). Decided from the finished filesystem model
and the packages' tar indexes alone; no data tar is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builder.apk.tarindex import TarEntry
from builder.errors import FormatError
from builder.fs.extent import Extent, read_extent
from builder.fs.kinds import DIR, FILE, HARDLINK, KIND_OF_TYPEFLAG, SYMLINK
from builder.fs.model import FsModel, Meta, name_key
from builder.gotar import END_MARKER, encode_header, padding
from builder.layer.tarmap import header_for, layer_walk


@dataclass
class Keep:
    """Reuse bytes [start, end) of the package's data tar."""

    start: int
    end: int


@dataclass
class Header:
    """New header bytes for a winner whose own header differs; its content follows as Keep."""

    data: bytes


@dataclass
class StitchStats:
    entries_kept: int = 0
    entries_rewritten: int = 0
    entries_cut: int = 0
    final_entries: int = 0


def _canonical(fs: FsModel, path: str) -> str | None:
    # Fast path: a key of the model is canonical (install stores nodes only under canonical
    # paths and drops a directory's children when it is replaced), so it needs no resolving.
    if path in fs.meta:
        return path
    try:
        return fs.resolve(fs.check_entry_name(path, "stitch"), follow=False, who="stitch")
    except FormatError:
        return None


def _same_header(e: TarEntry, canon: str, m: Meta) -> bool:
    return (e.path == canon and (e.mode & 0o7777) == m.mode and e.uid == m.uid
            and e.gid == m.gid and e.mtime == m.mtime and e.mtime_exact
            and e.xattrs == m.xattrs)


def plan_package(fs: FsModel, package: str, data_tar: Path, entries: list[TarEntry],
                 users: dict[int, str], groups: dict[int, str], placed: set[str],
                 stats: StitchStats, pieces: bool = True) -> list[Keep | Header]:
    """The pieces of one package's stream; adds the canonical paths it places to `placed`.
    Decided from the tar index alone: the data tar itself is not read. Without `pieces`
    only `placed` and `stats` are filled in (no headers are encoded) and [] is returned."""
    plan: list[Keep | Header] = []

    def keep(start: int, end: int) -> None:
        if not pieces:
            return
        if plan and isinstance(plan[-1], Keep) and plan[-1].end == start:
            plan[-1].end = end
        else:
            plan.append(Keep(start, end))

    for e in entries:
        canon = _canonical(fs, e.path)
        m = fs.meta.get(canon) if canon else None
        kind = KIND_OF_TYPEFLAG.get(e.type)
        if canon is None or m is None or kind is None:  # (m is None when canon is)
            stats.entries_cut += 1
            continue
        if kind == DIR:
            if m.kind == DIR and canon == e.path and not e.global_header:
                keep(e.header_offset, e.end_offset)
                stats.entries_kept += 1
            else:
                stats.entries_cut += 1
            continue
        if m.kind != kind or not _is_winner(fs, canon, m, e, package, data_tar) or \
                (kind == HARDLINK and m.linkname not in placed):
            # (A hard link is kept only after its target's final entry: else it would link
            # to nothing, or to content a later entry replaces. The final stretch has it.)
            stats.entries_cut += 1
            continue
        placed.add(canon)
        # A contiguous file (typeflag 7) is written as the regular file it installs as:
        # containerd's unpacker knows no typeflag 7.
        if _same_header(e, canon, m) and not e.global_header and e.type != "7":
            keep(e.header_offset, e.end_offset)
            stats.entries_kept += 1
        else:
            if pieces:
                plan.append(Header(encode_header(header_for(canon, m, users, groups))))
            if kind == FILE and e.size:
                keep(e.data_offset, e.end_offset)
            stats.entries_rewritten += 1
    return plan


def _is_winner(fs: FsModel, canon: str, m: Meta, e: TarEntry, package: str,
               data_tar: Path) -> bool:
    """Whether the model's node at `canon` was made by exactly this tar entry."""
    if m.kind == FILE:
        content = fs.content(canon)
        return (isinstance(content, Extent)
                and (content.path is data_tar or content.path == data_tar)
                and content.offset == e.data_offset and content.size == e.size)
    if m.package != package or m.mtime != e.mtime:
        return False
    if m.kind == SYMLINK:
        return m.linkname == e.linkname
    if m.kind == HARDLINK:
        return m.linkname == _canonical(fs, e.linkname)
    return m.devmajor == e.devmajor and m.devminor == e.devminor


def final_entries(fs: FsModel, placed: set[str], users: dict[int, str],
                  groups: dict[int, str], stats: StitchStats) -> Iterator[bytes]:
    """Tar bytes of the final stretch: every directory, and every node no package stream
    placed, in the sorted layer's order; then the end-of-archive marker."""
    # Only this part of the walk: the order of a sorted pre-order walk is the order of the
    # paths' component lists.
    rest = sorted((p for p, m in fs.meta.items() if m.kind == DIR or p not in placed),
                  key=lambda p: [name_key(c) for c in p.split("/")])
    files = [p for p in placed if fs.meta[p].kind == FILE]
    for path, m in layer_walk(fs, files, ((p, fs.meta[p]) for p in rest)):
        stats.final_entries += 1
        yield encode_header(header_for(path, m, users, groups))
        if m.kind == FILE and m.size:
            content = fs.content(path)
            yield read_extent(content) if isinstance(content, Extent) else content
            yield padding(m.size)
    yield END_MARKER
