"""The `fetch` stage: get every resolved `.apk` (cache first) and check it against its index
record (size, `C:`, datahash; per-file SHA-1s are checked by `expand`).

Interface: `fetch(packages, apk_arch, fetcher, keyring) -> {name: Path}`. The keyring passed
by the pipeline is None: packages are trusted through the signed index (`C:`), as apk does;
their own signatures may be by keys that are not in the keyring.

Implementations: `reference` (serial), `parallel` (the same work on a thread pool), `fast`
(what the `fast` profile picks): the thread pool over the Fetcher's one pooled session, and
a verification that reads only the head of each `.apk` (signature + control members) and
hashes the data section in place from an mmap — no whole-file read, no section copies — once
per change of the file: a verification stamp in the cache (builder/repo/stamp.py) lets a hot
build skip the SHA-256 pass over a package file that has not changed since it passed it, so
a hot build reads only the packages' heads.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import mmap
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from builder.apk.layout import read_layout, read_pkginfo
from builder.apk.model import Package
from builder.apk.pkginfo import pkginfo_to_package
from builder.errors import FetchError, FormatError, VerificationError
from builder.repo import stamp
from builder.repo.cache import VERIFIED_APK, Cache
from builder.repo.fetch import Fetcher, fetch_packages, fetch_packages_parallel
from builder.repo.repository import Repository
from builder.workpool import quick_then_pooled

if TYPE_CHECKING:
    from builder.apk.signing import Keyring

log = logging.getLogger(__name__)


class _NotQuick(Exception):
    """`verify_package_fast(quick=True)` would have to hash the data section."""


def verify_package_fast(path: Path, pkg: Package, cache: Cache | None = None,
                        quick: bool = False) -> None:
    """`verify_package_file`'s checks (size, `C:`, name/version, datahash), reading only the
    `.apk`'s head and hashing its data section in place.

    With a `cache`, the datahash pass is skipped when the package directory's `apk.verified`
    stamp (builder/repo/stamp.py) shows this very file — same device, inode, size, mtime and
    ctime — already hashed to this datahash; every other check runs every time. The head is
    always re-read, so `C:` still pins `.PKGINFO` and with it the datahash compared with the
    stamp. A full pass that succeeds writes the stamp; with `quick`, _NotQuick is raised
    instead of a full pass."""
    layout = read_layout(path)
    if pkg.size and layout.size != pkg.size:
        raise VerificationError(
            f"{pkg}: {path} is {layout.size} bytes, the index says S:{pkg.size}")
    checksum = "Q1" + base64.b64encode(layout.control_sha1).decode()
    if pkg.checksum and checksum != pkg.checksum:
        raise VerificationError(
            f"{pkg}: control checksum mismatch: index has C:{pkg.checksum}, "
            f"{path} has {checksum}"
        )
    fields, _ = read_pkginfo(layout)
    got = pkginfo_to_package(fields, f"{path}:.PKGINFO")
    if (got.name, got.version) != (pkg.name, pkg.version):
        raise VerificationError(f"{pkg}: {path} contains {got.name}-{got.version}")
    if not got.datahash:
        log.warning("%s: .PKGINFO has no datahash; data section not checked at fetch", pkg)
        return
    want = got.datahash.lower()
    facts = {"datahash": want, "data_offset": layout.control_end}
    stamp_path = cache.package_dir_hex(layout.key) / VERIFIED_APK if cache else None
    started = stamp.check_started()
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        if stamp_path is not None and stamp.is_stamped(stamp_path, before, facts):
            return
        if quick:
            raise _NotQuick(str(path))
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            data = view[layout.control_end:]
            try:
                actual = hashlib.sha256(data).hexdigest()
            finally:
                data.release()
                view.release()
        after = os.fstat(f.fileno())
    if actual != want:
        raise VerificationError(
            f"{pkg}: datahash mismatch: .PKGINFO says {got.datahash}, data section of "
            f"{path} hashes to {actual}"
        )
    if stamp_path is not None:
        stamp.write_stamp(stamp_path, before, after, facts, started)


def _fetch_one_fast(fetcher: Fetcher, pkg: Package, arch: str) -> Path:
    repo = Repository(url=pkg.repository, tag=pkg.repository_tag)
    return fetcher.fetch_package(repo, pkg, arch,
                                 lambda path: verify_package_fast(path, pkg, fetcher.cache))


def _fetch_one_quick(fetcher: Fetcher, pkg: Package, arch: str) -> Path | None:
    """`_fetch_one_fast`'s result when the package is on disk (local repository or cache)
    and its stamp spares the hash; None when a download or a hash pass is needed."""
    repo = Repository(url=pkg.repository, tag=pkg.repository_tag)
    if repo.is_remote and not (pkg.checksum and fetcher.cache.package_path(
            pkg.checksum, f"{pkg} ({repo.url})").is_file()):
        return None

    def check(path: Path) -> None:
        try:
            verify_package_fast(path, pkg, fetcher.cache, quick=True)
        except (VerificationError, FormatError):
            # Anything wrong (a damaged cache entry to fetch again, a bad local file to
            # report) is left to the full path, which warns, refetches or raises.
            raise _NotQuick(str(path)) from None

    try:
        return fetcher.fetch_package(repo, pkg, arch, check)
    except _NotQuick:
        return None


def fetch_fast(
    packages: Iterable[Package],
    arch: str,
    fetcher: Fetcher,
    keyring: Keyring | None = None,
    workers: int | None = None,
) -> dict[str, Path]:
    """Fetch (cache first) with the in-place verification. Same result, checks and cache
    entries as the reference; the first failure in package order is raised.

    Packages already on disk whose stamps spare the hash are checked first, on this thread
    (reading a few KiB each: threads would only add switching). The rest — downloads and
    hash passes — run on a thread pool of `workers` (default: the fetcher's connection pool
    size), largest first, so the longest download or hash does not start last."""
    pkgs = list(packages)
    for pkg in pkgs:
        if not pkg.repository:
            raise FetchError(f"{pkg}: no repository recorded for this package")
    paths = quick_then_pooled(
        pkgs, lambda pkg: _fetch_one_quick(fetcher, pkg, arch),
        lambda pkg: _fetch_one_fast(fetcher, pkg, arch), size=lambda pkg: pkg.size,
        workers=workers or fetcher.http.pool_size, name="fetch")
    return {pkg.name: path for pkg, path in zip(pkgs, paths, strict=True)}


IMPLEMENTATIONS: dict[str, Callable[..., dict]] = {
    "reference": fetch_packages,
    "parallel": fetch_packages_parallel,
    "fast": fetch_fast,
}
FAST = "fast"
