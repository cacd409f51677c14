"""The `publish` stage: push blobs, per-arch manifests and the index to a registry.

Interface: `publish(result, refs, ca_file) -> str` (the index digest).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def publish_reference(result: Any, refs: list[str], ca_file: str | None) -> str:
    from builder.oci.registry import publish_index

    return publish_index(result, refs, ca_file)


IMPLEMENTATIONS: dict[str, Callable[..., str]] = {"reference": publish_reference}
