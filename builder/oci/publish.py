"""Publishing: push layers, configs, per-arch manifests and the index to a registry.

`publish_*(result, refs) -> PushSummary`, where `result` is the pipeline's BuildResult and
`refs` are image references (`host[:port]/repo[:tag]`); all refs must name the
same registry repository when several tags are given for one push.

`publish_reference` uploads one blob at a time; `publish_parallel` up to PARALLEL_UPLOADS
blobs at once, largest first, and one thread per target repository. Both skip blobs the
registry already has (HEAD first).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from builder.oci.layout import BlobSource

if TYPE_CHECKING:  # the registry client (and requests) is loaded only when publishing
    from builder.artefacts import BuildResult
    from builder.oci.registry import PushResult


@dataclass
class PushSummary:
    index_digest: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0


PARALLEL_UPLOADS = 4


def _publish(result: BuildResult, refs: list[str], workers: int,
             concurrent_repos: bool) -> PushSummary:
    from builder.oci.registry import Registry, parse_reference, push_image

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

    def push(target: tuple[str, str]) -> PushResult:
        host, repo = target
        return push_image(Registry.for_host(host), repo, groups[target], result.index,
                          result.images, layers, workers=workers)

    if concurrent_repos and len(groups) > 1:
        with ThreadPoolExecutor(len(groups)) as pool:
            results = list(pool.map(push, groups))
    else:
        results = [push(target) for target in groups]
    for pushed in results:
        summary.index_digest = pushed.index_digest
        summary.uploaded += pushed.uploaded
        summary.skipped += pushed.skipped
        summary.bytes_uploaded += sum(sizes.get(d, 0) for d in pushed.uploaded)
    return summary


def publish_reference(result: BuildResult, refs: list[str]) -> PushSummary:
    """Serial: one repository after the other, one blob upload at a time."""
    return _publish(result, refs, 1, False)


def publish_parallel(result: BuildResult, refs: list[str]) -> PushSummary:
    """Concurrent blob uploads (largest first) and repositories pushed side by side."""
    return _publish(result, refs, PARALLEL_UPLOADS, True)
