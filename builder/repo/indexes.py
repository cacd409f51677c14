"""The reference `index` stage: get, verify and parse each repository's APKINDEX.

An index is verified (its signature, with the build's keyring) and parsed once per content:
the result is kept in the cache as a memo named by the index's SHA-256, the keyring's
fingerprint and whether untrusted indexes were allowed (`v1/index-parsed/`). A later build
that gets the same bytes (a 304 on its conditional GET, or an unchanged local file) loads
the memo: no inflate, no signature check — so no `cryptography` import — and no text
parsing. The memo is derived data, checked like the cache's other small artefacts: its own
SHA-256 is recorded in it, so a damaged one is ignored and rebuilt. Trust still comes from
the signature: a memo exists only for bytes that verified with exactly these keys, and the
index bytes are hashed on every build to find it (different bytes, another memo).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from builder.apk.model import Package
from builder.repo.fetch import Fetcher
from builder.repo.repository import Repository
from builder.util.atomic import write_bytes

if TYPE_CHECKING:
    from builder.apk.index import ApkIndex
    from builder.apk.signing import Keyring
    from builder.repo.cache import Cache

log = logging.getLogger(__name__)

MEMO_FORMAT = 1  # bump when the memo's content or meaning changes
_FIELDS = [f.name for f in fields(Package)]


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
    memo = IndexMemo(fetcher.cache, keyring, allow_untrusted)
    packages: list[Package] = []
    for repo in repositories:
        index = fetcher.fetch_index(repo, apk_arch, memo.parse)
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


class IndexMemo:
    """`parse(data, source)` for the Fetcher: verify + parse, or the memo of an earlier one.

    A memo file is a header line (JSON: format, the index's SHA-256, the Package fields, the
    body's SHA-256) and the body (JSON: rows, description, signers)."""

    def __init__(self, cache: Cache, keyring: Keyring, allow_untrusted: bool) -> None:
        self.cache = cache
        self.keyring = keyring
        self.allow_untrusted = allow_untrusted
        self.hits = 0

    def _path(self, digest: str) -> Path:
        keys = self.keyring.fingerprint()[:32]
        trust = "u" if self.allow_untrusted else "t"
        return self.cache.base / "index-parsed" / digest[:2] / f"{digest}-{keys}-{trust}.json"

    def parse(self, data: bytes, source: str) -> ApkIndex:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        index = self._load(path, digest)
        if index is not None:
            self.hits += 1
            return index
        from builder.apk.index import read_index

        index = read_index(data, self.keyring, source, allow_untrusted=self.allow_untrusted)
        self._store(path, digest, index)
        return index

    def _load(self, path: Path, digest: str) -> ApkIndex | None:
        from builder.apk.index import ApkIndex

        try:
            head, _, body = path.read_bytes().partition(b"\n")
            meta = json.loads(head)
            if meta.get("format") != MEMO_FORMAT or meta.get("index_sha256") != digest \
                    or meta.get("fields") != _FIELDS \
                    or hashlib.sha256(body).hexdigest() != meta.get("sha256"):
                return None
            doc = json.loads(body)
            return ApkIndex([Package(*row) for row in doc["rows"]], doc["description"],
                            list(doc["signers"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("index memo %s unreadable (%s); verifying again", path, exc)
            return None

    def _store(self, path: Path, digest: str, index: ApkIndex) -> None:
        body = json.dumps({"rows": [[getattr(p, f) for f in _FIELDS] for p in index.packages],
                           "description": index.description, "signers": list(index.signers)},
                          separators=(",", ":")).encode()
        head = json.dumps({"format": MEMO_FORMAT, "index_sha256": digest, "fields": _FIELDS,
                           "sha256": hashlib.sha256(body).hexdigest()}).encode()
        try:  # not fsync'd: a memo lost in a crash only means verifying that index again
            write_bytes(path, head + b"\n" + body, durable=False)
        except OSError as exc:  # a memo that cannot be written costs time, not correctness
            log.debug("index memo %s not written: %s", path, exc)
