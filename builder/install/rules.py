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
from dataclasses import dataclass, field

from builder.apk.installed_db import FileRecord
from builder.apk.model import Package
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


def install_package(state: InstallState, exp: ExpandedPackage) -> None:
    fs = state.fs
    pkg = exp.package
    who = exp.who
    if pkg.name in state.packages:
        return
    state.packages[pkg.name] = pkg
    records: list[FileRecord] = []
    state.files[pkg.name] = records
    leading = True
    meta = fs.meta
    name_of = pkg.name
    tar_path = exp.data_tar
    # Each entry's path is resolved once (canonical=...): nothing between the conflict check
    # and the write changes a symlink.
    with open(tar_path, "rb") as data:
        fileobj = data if fs.uses_fileobj else None
        for e in exp.entries:
            name = fs.check_entry_name(e.path, who)
            if leading and "/" not in name and name.startswith("."):
                continue  # APKv1 control files at the top of the data tar
            leading = False
            if not name:
                continue
            t = e.type
            rec = FileRecord(name, t == "5", e.mode & 0o7777, e.uid, e.gid, e.checksum)
            if t == "5":
                fs.mkdir(name, e.mode & 0o777, mtime=e.mtime, package=name_of, who=who,
                         xattrs=e.xattrs)
                records.append(rec)
                continue
            canon = fs.resolve(name, follow=False, who=who)
            old = meta.get(canon)
            if t == "2":
                new_sum = _symlink_sha1(e.linkname)
            elif e.checksum and (old is not None or t == "0" or t == "7"):
                new_sum = sha1_hex(e.checksum)
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
                fs.write_file(name, Extent(tar_path, e.data_offset, e.size, fileobj),
                              e.mode & 0o7777, mtime=e.mtime, package=name_of,
                              checksum=new_sum, who=who, xattrs=e.xattrs, canonical=canon)
                state.bytes_in += e.size
            elif t == "2":
                fs.check_link_target(e.linkname, name, who)
                fs.symlink(name, e.linkname, mtime=e.mtime, package=name_of, checksum=new_sum,
                           who=who, canonical=canon)
            elif t == "1":
                target = fs.check_entry_name(e.linkname, who)
                fs.hardlink(name, target, mtime=e.mtime, package=name_of, who=who,
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


