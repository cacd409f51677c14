"""Checking a fetched `.apk` against its index record: size (`S:`), `C:` (SHA-1 of the
control member, which also pins `.PKGINFO` and so its `datahash`), name and version, and
`datahash` (SHA-256 of the compressed data section).

Deliberately not done here: per-file SHA-1s (the `expand` stage checks them while it
inflates the data tar once) and the package's own signature (as in apko, the signed index
plus `C:` is the chain of trust; a package signed by a key outside the keyring is still
installable when a trusted index lists it).

Two verifiers, one set of record checks: `verify_package_file` (the reference: reads the
whole file) and `verify_package_fast` (reads only the head and hashes the data section in
place from an mmap, once per change of the file: a verification stamp in the cache,
builder/repo/stamp.py, lets a hot build skip the SHA-256 pass over a package file that has
not changed since it passed it).
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
from pathlib import Path

from builder.apk.layout import read_layout, read_pkginfo
from builder.apk.model import Package
from builder.apk.pkginfo import pkginfo_to_package
from builder.errors import VerificationError
from builder.repo import stamp
from builder.repo.cache import VERIFIED_APK, Cache
from builder.util.checksums import q1
from builder.util.filememo import FileMemo

log = logging.getLogger(__name__)


class NotQuick(Exception):
    """`verify_package_fast(quick=True)` would have to hash the data section."""


def check_size(pkg: Package, path: Path, size: int) -> None:
    if pkg.size and size != pkg.size:
        raise VerificationError(f"{pkg}: {path} is {size} bytes, the index says S:{pkg.size}")


def check_checksum(pkg: Package, path: Path, checksum: str) -> None:
    if pkg.checksum and checksum != pkg.checksum:
        raise VerificationError(
            f"{pkg}: control checksum mismatch: index has C:{pkg.checksum}, "
            f"{path} has {checksum}")


def check_pkginfo(pkg: Package, path: Path, got: Package) -> bool:
    """Name and version from `.PKGINFO` against the record; False when it has no
    `datahash` (then there is nothing more to check)."""
    if (got.name, got.version) != (pkg.name, pkg.version):
        raise VerificationError(f"{pkg}: {path} contains {got.name}-{got.version}")
    if not got.datahash:
        log.warning("%s: .PKGINFO has no datahash; data section not checked at fetch", pkg)
        return False
    return True


def check_datahash(pkg: Package, path: Path, want: str, actual: str) -> None:
    if actual != want.lower():
        raise VerificationError(
            f"{pkg}: datahash mismatch: .PKGINFO says {want}, data section of "
            f"{path} hashes to {actual}")


def verify_package_file(path: Path, pkg: Package) -> None:
    """The reference verifier: the whole `.apk` read and parsed."""
    from builder.apk.package import read_apk

    check_size(pkg, path, path.stat().st_size)
    apk = read_apk(path.read_bytes(), str(path))
    got = apk.package
    check_checksum(pkg, path, got.checksum)
    if check_pkginfo(pkg, path, got):
        check_datahash(pkg, path, got.datahash, hashlib.sha256(apk.data).hexdigest())


# Packages that passed `verify_package_fast` in this process, by path and index record.
_PASSED: FileMemo[bool] = FileMemo()


def verify_package_fast(path: Path, pkg: Package, cache: Cache | None = None,
                        quick: bool = False) -> None:
    """`verify_package_file`'s checks, reading only the `.apk`'s head and hashing its data
    section in place.

    With a `cache`, the datahash pass is skipped when the package directory's `apk.verified`
    stamp shows this very file — same device, inode, size, mtime and ctime — already hashed
    to this datahash; every other check runs every time. The head is always re-read, so
    `C:` still pins `.PKGINFO` and with it the datahash compared with the stamp. A full pass
    that succeeds writes the stamp; with `quick`, NotQuick is raised instead of a full
    pass. A file that passed in this process, unchanged since, against the same record, is
    not checked again (builder/util/filememo.py)."""
    record = (str(path), pkg.name, pkg.version, pkg.size, pkg.checksum)
    passed, snap = _PASSED.get(record, (path,))
    if passed:
        return
    layout = read_layout(path)
    check_size(pkg, path, layout.size)
    check_checksum(pkg, path, q1(layout.control_sha1))
    fields, _ = read_pkginfo(layout)
    got = pkginfo_to_package(fields, f"{path}:.PKGINFO")
    if not check_pkginfo(pkg, path, got):
        return
    want = got.datahash.lower()
    facts = {"datahash": want, "data_offset": layout.control_end}
    stamp_path = cache.package_dir_hex(layout.key) / VERIFIED_APK if cache else None
    started = stamp.check_started()
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        if stamp_path is not None and stamp.is_stamped(stamp_path, before, facts):
            _PASSED.put(snap, True)
            return
        if quick:
            raise NotQuick(str(path))
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            data = view[layout.control_end:]
            try:
                actual = hashlib.sha256(data).hexdigest()
            finally:
                data.release()
                view.release()
        after = os.fstat(f.fileno())
    check_datahash(pkg, path, got.datahash, actual)
    _PASSED.put(snap, True)
    if stamp_path is not None:
        stamp.write_stamp(stamp_path, before, after, facts, started)
