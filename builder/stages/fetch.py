"""The `fetch` stage: get every resolved `.apk` (cache first) and check it against its index
record (size, `C:`, datahash; per-file SHA-1s are checked by `expand`).

Interface: `fetch(packages, apk_arch, fetcher, keyring) -> {name: Path}`. The keyring passed
by the pipeline is None: packages are trusted through the signed index (`C:`), as apk does;
their own signatures may be by keys that are not in the keyring.

Implementations: `reference` (serial), `parallel` (the same work on a thread pool), `fast`
(what the `fast` profile picks): the thread pool over the Fetcher's one pooled session, and
a verification that reads only the head of each `.apk` (signature + control members) and
hashes the data section in place from an mmap — no whole-file read, no section copies. A hot
build therefore costs one SHA-256 pass over the compressed packages (hashlib releases the
GIL, so the pool spreads it over the cores) and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import mmap
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from builder.apk.layout import read_layout, read_pkginfo
from builder.apk.model import Package
from builder.apk.pkginfo import pkginfo_to_package
from builder.errors import FetchError, VerificationError
from builder.repo.fetch import Fetcher, fetch_packages, fetch_packages_parallel
from builder.repo.repository import Repository

if TYPE_CHECKING:
    from builder.apk.signing import Keyring

log = logging.getLogger(__name__)


def verify_package_fast(path: Path, pkg: Package) -> None:
    """`verify_package_file`'s checks (size, `C:`, name/version, datahash), reading only the
    `.apk`'s head and hashing its data section in place."""
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
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        data = view[layout.control_end:]
        try:
            actual = hashlib.sha256(data).hexdigest()
        finally:
            data.release()
            view.release()
    if actual != got.datahash.lower():
        raise VerificationError(
            f"{pkg}: datahash mismatch: .PKGINFO says {got.datahash}, data section of "
            f"{path} hashes to {actual}"
        )


def _fetch_one_fast(fetcher: Fetcher, pkg: Package, arch: str) -> Path:
    repo = Repository(url=pkg.repository, tag=pkg.repository_tag)
    return fetcher.fetch_package(repo, pkg, arch, lambda path: verify_package_fast(path, pkg))


def fetch_fast(
    packages: Iterable[Package],
    arch: str,
    fetcher: Fetcher,
    keyring: Keyring | None = None,
    workers: int | None = None,
) -> dict[str, Path]:
    """Concurrent fetch (cache first) with the in-place verification. Same result, checks
    and cache entries as the reference; the first failure in package order is raised.
    `workers` defaults to the fetcher's connection pool size. Largest packages start first,
    so the longest download or hash does not start last."""
    pkgs = list(packages)
    for pkg in pkgs:
        if not pkg.repository:
            raise FetchError(f"{pkg}: no repository recorded for this package")
    if not pkgs:
        return {}
    n = max(1, min(workers or fetcher.http.pool_size, len(pkgs)))
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="fetch") as pool:
        futures = {id(pkg): pool.submit(_fetch_one_fast, fetcher, pkg, arch)
                   for pkg in sorted(pkgs, key=lambda p: -p.size)}
        try:
            return {pkg.name: futures[id(pkg)].result() for pkg in pkgs}
        except BaseException:
            for fut in futures.values():
                fut.cancel()
            raise


IMPLEMENTATIONS: dict[str, Callable[..., dict]] = {
    "reference": fetch_packages,
    "parallel": fetch_packages_parallel,
    "fast": fetch_fast,
}
FAST = "fast"
