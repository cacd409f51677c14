"""The `publish` stage: push layers, configs, per-arch manifests and the index to a registry.

Interface: `publish(result, refs) -> PushSummary` where `result` is the pipeline's
BuildResult and `refs` are image references (`host[:port]/repo[:tag]`); all refs must name the
same registry repository when several tags are given for one push.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from builder.oci.layout import BlobSource
from builder.oci.registry import Registry, parse_reference, push_image
from builder.pipeline import BuildResult


@dataclass
class PushSummary:
    index_digest: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0


def publish_reference(result: BuildResult, refs: list[str]) -> PushSummary:
    """Serial per repository: one push per distinct (registry, repository)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for ref in refs:
        r = parse_reference(ref)
        groups.setdefault((r.registry, r.repository), [])
        if r.tag:
            groups[(r.registry, r.repository)].append(r.tag)
    layers = [BlobSource.from_file(p, d) for d, p in sorted(result.layers.items())]
    sizes = {s.digest: s.size for s in layers}
    sizes.update({img.config.digest: img.config.size for img in result.images})
    summary = PushSummary(index_digest=result.index.digest)
    for (host, repo), tags in groups.items():
        reg = Registry.for_host(host)
        pushed = push_image(reg, repo, tags, result.index, result.images, layers, workers=1)
        summary.index_digest = pushed.index_digest
        summary.uploaded += pushed.uploaded
        summary.skipped += pushed.skipped
        summary.bytes_uploaded += sum(sizes.get(d, 0) for d in pushed.uploaded)
    return summary


IMPLEMENTATIONS: dict[str, Callable[[BuildResult, list[str]], PushSummary]] = {
    "reference": publish_reference,
}
