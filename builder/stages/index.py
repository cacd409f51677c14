"""The `index` stage: get, verify and parse each repository's APKINDEX for one arch.

Interface: `index(repositories, apk_arch, keyring, fetcher, allow_untrusted) -> list[Package]`.
"""

from __future__ import annotations

from collections.abc import Callable

from builder.repo.indexes import load_indexes

IMPLEMENTATIONS: dict[str, Callable[..., list]] = {"reference": load_indexes}
