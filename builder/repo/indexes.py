"""The reference `index` stage: get, verify and parse each repository's APKINDEX."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from builder.apk.model import Package
from builder.repo.fetch import Fetcher
from builder.repo.repository import Repository

if TYPE_CHECKING:
    from builder.apk.signing import Keyring

log = logging.getLogger(__name__)


def load_indexes(
    repositories: list[Repository],
    apk_arch: str,
    keyring: Keyring,
    fetcher: Fetcher,
    allow_untrusted: bool = False,
) -> list[Package]:
    """All index records of `repositories` for `apk_arch`, in repository order.

    Each Package gets `.repository` (the repository URL as configured) and
    `.repository_tag`. A local repository without an index for `apk_arch` is skipped with a
    warning (as apko does); an unreachable remote index, a bad signature or a malformed
    index raises FetchError / VerificationError / FormatError naming the URL.
    """
    from builder.apk.index import read_index

    def parse(data: bytes, source: str):  # -> ApkIndex
        return read_index(data, keyring, source, allow_untrusted=allow_untrusted)

    packages: list[Package] = []
    for repo in repositories:
        index = fetcher.fetch_index(repo, apk_arch, parse)
        if index is None:
            log.warning(
                "repository %s: no index at %s (skipped)", repo, repo.index_url(apk_arch)
            )
            continue
        for pkg in index.packages:
            pkg.repository = repo.url
            pkg.repository_tag = repo.tag
        packages.extend(index.packages)
    return packages
