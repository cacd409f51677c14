"""The `fetch` stage's work: get every resolved `.apk` (cache first) and verify it against its
index record (builder/repo/verify.py).

- `fetch_reference`: one package after the other, whole-file verification;
- `fetch_parallel`: the same work on a thread pool (for the network-bound cold case);
- `fetch_fast`: the thread pool over the Fetcher's one pooled session, with the in-place,
  stamped verification: packages already on disk whose stamps spare the hash are checked
  first on the calling thread (a few KiB each: threads would only add switching); the rest —
  downloads and hash passes — go to the pool, largest first.

All three give the same result, checks and cache entries; the first failure in package order
is raised. Each Package must carry `.repository`/`.repository_tag` (set by `load_indexes`).
The keyring passed by the pipeline is None: packages are trusted through the signed index and
`C:`, as apk does; their own signatures may be by keys that are not in the keyring.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from builder.apk.model import Package
from builder.errors import FetchError, FormatError, VerificationError
from builder.repo.fetch import Fetcher
from builder.repo.repository import Repository
from builder.repo.verify import NotQuick, verify_package_fast, verify_package_file
from builder.util.workpool import quick_then_pooled

if TYPE_CHECKING:
    from builder.apk.signing import Keyring


def _repository(pkg: Package) -> Repository:
    if not pkg.repository:
        raise FetchError(f"{pkg}: no repository recorded for this package")
    return Repository(url=pkg.repository, tag=pkg.repository_tag)


def _fetch_one(fetcher: Fetcher, pkg: Package, arch: str) -> Path:
    return fetcher.fetch_package(_repository(pkg), pkg, arch,
                                 lambda path: verify_package_file(path, pkg))


def fetch_reference(packages: Iterable[Package], apk_arch: str, fetcher: Fetcher,
                    keyring: Keyring | None = None) -> dict[str, Path]:
    """Serially: {package name: path of the verified .apk}."""
    return {pkg.name: _fetch_one(fetcher, pkg, apk_arch) for pkg in packages}


def fetch_parallel(packages: Iterable[Package], apk_arch: str, fetcher: Fetcher,
                   keyring: Keyring | None = None, workers: int | None = None
                   ) -> dict[str, Path]:
    """`fetch_reference`'s work on a thread pool of `workers` (default: the fetcher's
    connection pool size)."""
    pkgs = list(packages)
    for pkg in pkgs:
        _repository(pkg)
    paths = quick_then_pooled(pkgs, lambda pkg: None,
                              lambda pkg: _fetch_one(fetcher, pkg, apk_arch),
                              size=lambda pkg: 0, workers=workers or fetcher.http.pool_size,
                              name="fetch")
    return {pkg.name: path for pkg, path in zip(pkgs, paths, strict=True)}


def _fetch_one_fast(fetcher: Fetcher, pkg: Package, arch: str) -> Path:
    return fetcher.fetch_package(_repository(pkg), pkg, arch,
                                 lambda path: verify_package_fast(path, pkg, fetcher.cache))


def _fetch_one_quick(fetcher: Fetcher, pkg: Package, arch: str) -> Path | None:
    """`_fetch_one_fast`'s result when the package is on disk (local repository or cache)
    and its stamp spares the hash; None when a download or a hash pass is needed."""
    repo = _repository(pkg)
    if repo.is_remote and not (pkg.checksum and fetcher.cache.package_path(
            pkg.checksum, f"{pkg} ({repo.url})").is_file()):
        return None

    def check(path: Path) -> None:
        try:
            verify_package_fast(path, pkg, fetcher.cache, quick=True)
        except (VerificationError, FormatError):
            # Anything wrong (a damaged cache entry to fetch again, a bad local file to
            # report) is left to the full path, which warns, refetches or raises.
            raise NotQuick(str(path)) from None

    try:
        return fetcher.fetch_package(repo, pkg, arch, check)
    except NotQuick:
        return None


def fetch_fast(packages: Iterable[Package], apk_arch: str, fetcher: Fetcher,
               keyring: Keyring | None = None, workers: int | None = None) -> dict[str, Path]:
    """Cache first, stamped in-place verification, quick packages first, then a pool of
    `workers` (default: the fetcher's connection pool size), largest first."""
    pkgs = list(packages)
    for pkg in pkgs:
        _repository(pkg)
    paths = quick_then_pooled(
        pkgs, lambda pkg: _fetch_one_quick(fetcher, pkg, apk_arch),
        lambda pkg: _fetch_one_fast(fetcher, pkg, apk_arch), size=lambda pkg: pkg.size,
        workers=workers or fetcher.http.pool_size, name="fetch")
    return {pkg.name: path for pkg, path in zip(pkgs, paths, strict=True)}
