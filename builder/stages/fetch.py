"""The `fetch` stage: get every resolved `.apk` (cache first) and check it against its index
record (size, `C:`, datahash, per-file SHA-1).

Interface: `fetch(packages, apk_arch, fetcher, keyring) -> {name: Path}`. The keyring passed
by the pipeline is None: packages are trusted through the signed index (`C:`), as apk does;
their own signatures may be by keys that are not in the keyring.

Implementations: `reference` (serial), `parallel` (the same work on a thread pool; what the
`fast` profile picks).
"""

from __future__ import annotations

from collections.abc import Callable

from builder.repo.fetch import fetch_packages, fetch_packages_parallel

IMPLEMENTATIONS: dict[str, Callable[..., dict]] = {
    "reference": fetch_packages,
    "parallel": fetch_packages_parallel,
}
FAST = "parallel"
