"""Laying packages into the image filesystem model, with apk's rules (apko-notes §1.7).

Existing directories keep their mode, the last package that ships a directory sets its
mtime; package content is owned 0:0 in the image (the installed db keeps the header's
owner); directory setuid/setgid/sticky bits are dropped, file ones kept; on a file conflict
an identical SHA-1 keeps the existing file, an existing package that `replaces` the new one
keeps its file, a new package that replaces the old one (or shares its origin) overwrites
it, anything else is an error. Files overwritten later disappear from the earlier package's
installed-db file list.

Every installer runs this code over its own filesystem model (on disk or in memory:
builder/fs/), so they cannot drift.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple

from builder.apk.installed_db import FileRecord
from builder.apk.model import Package
from builder.apk.tarindex import TarEntry
from builder.errors import FormatError
from builder.expand.model import ExpandedPackage
from builder.fs.extent import Extent
from builder.fs.kinds import DIR, KIND_OF_TYPEFLAG
from builder.fs.model import FsModel
from builder.gotar import TarHeader
from builder.util.checksums import q1, sha1_hex


@dataclass
class InstallState:
    fs: FsModel
    apk_arch: str
    source_date_epoch: int  # stamps scripts.tar entries (the options' epoch, not image time)
    packages: dict[str, Package] = field(default_factory=dict)  # installed, in order
    files: dict[str, list[FileRecord]] = field(default_factory=dict)
    scripts: list[tuple[TarHeader, bytes]] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    bytes_in: int = 0  # data-tar bytes laid down
    # each package's installed-db record as `write_db` wrote it (layering splits the db)
    records: dict[str, bytes] = field(default_factory=dict)


def _conflict_winner(state: InstallState, new: Package, old_owner: str, path: str,
                     same_content: bool) -> bool:
    """True when the new package's entry should replace the existing one."""
    if same_content:
        return False
    if old_owner == new.name:
        return True  # the package's data tar holds the path twice: the last entry wins
    if not old_owner:
        raise FormatError(f"{new}: {path} conflicts with a file the builder wrote")
    old = state.packages[old_owner]
    if new.name in old.replaces:
        return False
    if old.name in new.replaces or (new.origin and new.origin == old.origin):
        return True
    raise FormatError(f"{new}: file {path} is already provided by {old} "
                      "(neither package replaces the other)")


_KIND_WORDS = {"0": "file", "7": "file", "1": "hardlink", "2": "symlink", "3": "device",
               "4": "device", "6": "fifo"}


def _symlink_sha1(target: str) -> str:
    return hashlib.sha1(target.encode("utf-8", "surrogateescape")).hexdigest()


class _Step(NamedTuple):
    """One data-tar entry as install needs it, worked out from the entry alone."""

    name: str  # checked and cleaned
    type: str
    entry: TarEntry
    record: FileRecord
    sha1: str  # the content's hex SHA-1 ("" if none); a symlink's: of its target
    extent: Extent | None  # a regular file's content (when the model takes no handle)
    link: str  # a hardlink's target, checked and cleaned


def _steps(fs: FsModel, exp: ExpandedPackage) -> list[_Step]:
    """The entries of `exp` to install, in order: APKv1 control files at the top of the data
    tar and empty names left out; a bad name or link target raises here, naming it. Kept with
    `exp` (its `derived`): the quick expand load gives a long process one object per package,
    so every image after the first reuses them."""
    key = "install steps (model handles)" if fs.uses_fileobj else "install steps"
    known: list[_Step] | None = exp.derived.get(key)
    if known is not None:
        return known
    who, tar_path, bare = exp.who, exp.data_tar, not fs.uses_fileobj
    steps = []
    leading = True
    for e in exp.entries:
        name = fs.check_entry_name(e.path, who)
        if leading and "/" not in name and name.startswith("."):
            continue
        leading = False
        if not name:
            continue
        t = e.type
        if t == "2":
            fs.check_link_target(e.linkname, name, who)
            sha1 = _symlink_sha1(e.linkname)
        else:
            sha1 = sha1_hex(e.checksum) if e.checksum else ""
        steps.append(_Step(
            name, t, e, FileRecord(name, t == "5", e.mode & 0o7777, e.uid, e.gid, e.checksum),
            sha1, Extent(tar_path, e.data_offset, e.size) if bare and t in ("0", "7") else None,
            fs.check_entry_name(e.linkname, who) if t == "1" else ""))
    exp.derived[key] = steps
    return steps


def install_package(state: InstallState, exp: ExpandedPackage) -> None:
    fs = state.fs
    pkg = exp.package
    who = exp.who
    if pkg.name in state.packages:
        return
    state.packages[pkg.name] = pkg
    records: list[FileRecord] = []
    state.files[pkg.name] = records
    meta = fs.meta
    name_of = pkg.name
    tar_path = exp.data_tar
    steps = _steps(fs, exp)
    # Each entry's path is resolved once (canonical=...): nothing between the conflict check
    # and the write changes a symlink.
    with open(tar_path, "rb") if fs.uses_fileobj else nullcontext() as data:
        for name, t, e, rec, sha1, extent, link in steps:
            if t == "5":
                fs.mkdir(name, e.mode & 0o777, mtime=e.mtime, package=name_of, who=who,
                         xattrs=e.xattrs)
                records.append(rec)
                continue
            canon = fs.resolve(name, follow=False, who=who)
            old = meta.get(canon)
            if t == "2" or (sha1 and (old is not None or t == "0" or t == "7")):
                new_sum = sha1
            else:
                new_sum = ""
            if old is not None:
                if old.kind == DIR:
                    owner = f" (from {state.packages[old.package]})" \
                        if old.package in state.packages and old.package != name_of else ""
                    raise FormatError(f"{who}: {name} is a directory in the image{owner}, "
                                      f"the package has a {_KIND_WORDS.get(t, 'non-directory')}"
                                      " there")
                same = bool(new_sum) and new_sum == old.checksum
                if not _conflict_winner(state, pkg, old.package, name, same):
                    continue
                if old.package:
                    # The earlier owner's record goes (this package's own, when its data tar
                    # holds the path twice: the last entry wins, as apk extracts it).
                    prev = state.files[old.package]
                    prev[:] = [r for r in prev
                               if r.is_dir or fs.resolve(r.path, follow=False) != canon]
            if t == "0" or t == "7":
                fs.write_file(name, extent or Extent(tar_path, e.data_offset, e.size, data),
                              e.mode & 0o7777, mtime=e.mtime, package=name_of,
                              checksum=new_sum, who=who, xattrs=e.xattrs, canonical=canon)
                state.bytes_in += e.size
            elif t == "2":
                fs.symlink(name, e.linkname, mtime=e.mtime, package=name_of, checksum=new_sum,
                           who=who, canonical=canon)
            elif t == "1":
                fs.hardlink(name, link, mtime=e.mtime, package=name_of, who=who,
                            canonical=canon)
            elif t in ("3", "4", "6"):
                kind = KIND_OF_TYPEFLAG[t]
                fs.mknod(name, kind, e.devmajor, e.devminor, e.mode & 0o7777, mtime=e.mtime,
                         who=who, canonical=canon)
            else:
                raise FormatError(f"{who}: {name}: unsupported tar entry type {t!r}")
            meta[canon].package = name_of
            records.append(rec)
    control_q1 = q1(exp.control_sha1)
    for c in exp.control:
        if c.type != "0" or (c.mode & 0o555) != 0o555:
            continue
        state.scripts.append((TarHeader(
            name=f"{pkg.name}-{pkg.version}.{control_q1}{c.name}", mode=c.mode, uid=c.uid,
            gid=c.gid, uname=c.uname, gname=c.gname, size=len(c.data),
            mtime=state.source_date_epoch), c.data))
    for value in exp.pkginfo.get("triggers", []):
        state.triggers.append(f"{control_q1} {value}\n")


