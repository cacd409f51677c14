"""The `install` stage: the apk database skeleton (InitDB), then each package's data tar laid
into the image filesystem in resolved order, then the installed db, scripts.tar and triggers.

Interface: `install(state, expanded) -> None` where `state` is an `InstallState` already
initialised with `init_db()` and `expanded` is the ExpandedPackage list in install order. The
filesystem model in `state.fs` comes from `new_filesystem(<implementation name>, root)`:

- `reference`: an `FsRoot` — every file is extracted to a root directory on disk;
- `fast`: a `MemFs` — nothing is written; file nodes are extents of the data tars.

Both run the same rule code below (and in `builder.fsroot.FsModel`), so they cannot drift.

apk rules reproduced (apko-notes §1.7): existing directories keep their mode, the last package
that ships a directory sets its mtime; package content is owned 0:0 in the image (the installed
db keeps the header's owner); directory setuid/setgid/sticky bits are dropped, file ones kept;
on a file conflict an identical SHA-1 keeps the existing file, an existing package that
`replaces` the new one keeps its file, a new package that replaces the old one (or shares its
origin) overwrites it, anything else is an error. Files overwritten later disappear from the
earlier package's installed-db file list.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from builder.apk.model import Package
from builder.errors import FormatError
from builder.fsroot import BLOCK, CHAR, DIR, FIFO, Extent, FsModel, FsRoot
from builder.gcpause import paused
from builder.gotar import TarHeader, TarWriter
from builder.installed_db import FileRecord, format_record
from builder.stages.expand import ExpandedPackage

DB = "usr/lib/apk/db"
INSTALLED = f"{DB}/installed"
SCRIPTS = f"{DB}/scripts.tar"
TRIGGERS = f"{DB}/triggers"
_BASE_DIRS = [("tmp", 0o1777), ("dev", 0o755), ("etc", 0o755), ("opt", 0o755),
              ("proc", 0o555), ("var", 0o755), ("usr", 0o755)]
_APK_DIRS = ["etc/apk", "etc/apk/keys", "usr/lib", "usr/lib/apk", "usr/lib/apk/db",
             "usr/lib/apk/exec", "var/cache", "var/cache/apk", "var/cache/misc"]
CHAR_DEVICES = [("dev/zero", 1, 5, 0o666), ("dev/urandom", 1, 9, 0o666),
                ("dev/null", 1, 3, 0o666), ("dev/random", 1, 8, 0o666),
                ("dev/console", 5, 1, 0o620)]


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


def ensure_char_devices(fs: FsModel) -> None:
    for path, major, minor, mode in CHAR_DEVICES:
        if not fs.exists(path, follow=False):
            fs.mknod(path, CHAR, major, minor, mode)


def init_db(fs: FsModel, apk_arch: str, keys: list[tuple[str, bytes]],
            repositories: list[str], world: list[str]) -> None:
    """apk's database skeleton, InitKeyring, SetRepositories and SetWorld (apko-notes §1.3)."""
    for path, mode in _BASE_DIRS:
        if not fs.exists(path):
            fs.mkdir(path, mode)
    for path in _APK_DIRS:
        fs.mkdir_all(path)
    fs.write_file("etc/apk/world", b"\n")
    fs.write_file("etc/apk/repositories", b"\n")
    fs.write_file(f"{DB}/lock", b"", 0o600)
    fs.write_file(TRIGGERS, b"")
    fs.write_file(INSTALLED, b"")
    fs.write_file("etc/apk/arch", f"{apk_arch}\n".encode())
    ensure_char_devices(fs)
    fs.write_file(SCRIPTS, bytes(1024))
    for name, pem in keys:
        fs.write_file(f"etc/apk/keys/{name}", pem)
    fs.write_file("etc/apk/repositories", "".join(f"{r}\n" for r in repositories).encode()
                  or b"\n")
    fs.write_file("etc/apk/world", ("\n".join(sorted(world)) + "\n").encode())


def _conflict_winner(state: InstallState, new: Package, old_owner: str, path: str,
                     same_content: bool) -> bool:
    """True when the new package's entry should replace the existing one."""
    if same_content:
        return False
    if not old_owner:
        raise FormatError(f"{new}: {path} conflicts with a file the builder wrote")
    old = state.packages[old_owner]
    if new.name in old.replaces:
        return False
    if old.name in new.replaces or (new.origin and new.origin == old.origin):
        return True
    raise FormatError(f"{new}: file {path} is already provided by {old} "
                      "(neither package replaces the other)")


def _symlink_sha1(target: str) -> str:
    return hashlib.sha1(target.encode()).hexdigest()


def _sha1_hex(checksum: str) -> str:
    if checksum.startswith("Q1"):
        return base64.b64decode(checksum[2:]).hex()
    return checksum.lower()


def install_package(state: InstallState, exp: ExpandedPackage) -> None:
    fs = state.fs
    pkg = exp.package
    who = str(pkg)
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
                new_sum = _sha1_hex(e.checksum)
            else:
                new_sum = ""
            if old is not None:
                if old.kind == DIR:
                    raise FormatError(f"{who}: {name} is a directory in the image, "
                                      "the package has a non-directory there")
                same = bool(new_sum) and new_sum == old.checksum
                if not _conflict_winner(state, pkg, old.package, name, same):
                    continue
                if old.package and old.package != name_of:
                    prev = state.files[old.package]
                    prev[:] = [r for r in prev
                               if r.is_dir or fs.resolve(r.path, follow=False) != canon]
            if t == "0" or t == "7":
                fs.write_file(name, Extent(tar_path, e.data_offset, e.size, fileobj),
                              e.mode & 0o7777, mtime=e.mtime, package=name_of,
                              checksum=new_sum, who=who, xattrs=e.xattrs, canonical=canon)
                state.bytes_in += e.size
            elif t == "2":
                fs.symlink(name, e.linkname, mtime=e.mtime, package=name_of, checksum=new_sum,
                           who=who, canonical=canon)
            elif t == "1":
                target = fs.check_entry_name(e.linkname, who)
                fs.hardlink(name, target, mtime=e.mtime, package=name_of, who=who,
                            canonical=canon)
            elif t in ("3", "4", "6"):
                kind = {"3": CHAR, "4": BLOCK, "6": FIFO}[t]
                fs.mknod(name, kind, e.devmajor, e.devminor, e.mode & 0o7777, mtime=e.mtime,
                         who=who, canonical=canon)
            else:
                raise FormatError(f"{who}: {name}: unsupported tar entry type {t!r}")
            meta[canon].package = name_of
            records.append(rec)
    b64 = base64.b64encode(exp.control_sha1).decode()
    for c in exp.control:
        if c.type != "0" or (c.mode & 0o555) != 0o555:
            continue
        state.scripts.append((TarHeader(
            name=f"{pkg.name}-{pkg.version}.Q1{b64}{c.name}", mode=c.mode, uid=c.uid,
            gid=c.gid, uname=c.uname, gname=c.gname, size=len(c.data),
            mtime=state.source_date_epoch), c.data))
    for value in exp.pkginfo.get("triggers", []):
        state.triggers.append(f"Q1{b64} {value}\n")


def write_db(state: InstallState) -> None:
    """Write installed, scripts.tar and triggers from what was installed."""
    fs = state.fs
    db = b"".join(format_record(state.packages[n], state.files[n]) for n in state.packages)
    fs.write_file(INSTALLED, db)
    buf = io.BytesIO()
    tw = TarWriter(buf)
    for hdr, data in state.scripts:
        tw.add(hdr, data)
    tw.close()
    fs.write_file(SCRIPTS, buf.getvalue())
    fs.write_file(TRIGGERS, "".join(state.triggers).encode())


def resolve_apk_db(fs: FsModel) -> None:
    """`/lib/apk -> ../usr/lib/apk` unless `/lib` already is the usr-merged `usr/lib`."""
    if fs.resolve("lib") == "usr/lib":
        return
    fs.mkdir_all("lib")
    if not fs.exists("lib/apk", follow=False):
        fs.symlink("lib/apk", "../usr/lib/apk")


def install_reference(state: InstallState, expanded: list[ExpandedPackage]) -> None:
    """Serially lay each package into the root, then write the apk database."""
    for exp in expanded:
        install_package(state, exp)
    write_db(state)
    resolve_apk_db(state.fs)


def install_fast(state: InstallState, expanded: list[ExpandedPackage]) -> None:
    """The same rules as the reference; fast because `state.fs` is a MemFs (no file bytes
    are copied: file nodes point into the data tars) and the cyclic garbage collector is
    paused while the model's nodes are created (builder/gcpause.py)."""
    with paused():
        install_reference(state, expanded)


def new_filesystem(name: str, root: Path) -> FsModel:
    """The filesystem model the install implementation `name` lays packages into (`root` is
    where an on-disk model puts its files)."""
    if name == "fast":
        from builder.memfs import MemFs

        return MemFs()
    return FsRoot(root)


IMPLEMENTATIONS: dict[str, Callable[[InstallState, list[ExpandedPackage]], None]] = {
    "reference": install_reference,
    "fast": install_fast,
}
FAST = "fast"
