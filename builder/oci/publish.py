"""Publishing: push layers, configs, per-arch manifests and the index to a registry.

`publish_*(result, refs) -> PushSummary`, where `result` is the pipeline's BuildResult and
`refs` are image references (`host[:port]/repo[:tag]`); all refs must name the
same registry repository when several tags are given for one push.

`publish_reference` uploads one blob at a time; `publish_parallel` up to PARALLEL_UPLOADS
blobs at once, largest first, and one thread per target repository. Both skip blobs the
registry already has (HEAD first).

`publish_world` pushes the OCI layouts `apkimage build-many` wrote, each image as `publish`
pushes one, to `REGISTRY/PREFIX/<name>:latest`, one image after another on one registry
client. Across the world a blob is uploaded at most once: the digests pushed so far are kept
with the repository that holds them, and a blob a later repository lacks (HEAD first, as
always) is mounted from there (`POST ?mount=&from=`), uploaded only when the registry does not
mount it. Manifests and tags are HEADed first too, so a world pushed again sends nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import ApkImageError
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


# -- a world of images (build-many --publish) ---------------------------------------------


@dataclass(frozen=True)
class WorldImage:
    """One image of a world to push: its name in messages (the config), its OCI layout, the
    reference it goes to (`host/prefix/<stem>:latest`) and the index digest it must have."""

    name: str
    layout: str
    ref: str
    index_digest: str


@dataclass
class PublishedImage:
    ref: str
    digest: str
    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # blobs the repository had
    manifests_skipped: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "digest": self.digest, "uploaded": self.uploaded,
                "mounted": self.mounted, "skipped": self.skipped,
                "manifests_skipped": self.manifests_skipped,
                "bytes_uploaded": self.bytes_uploaded}


def world_refs(names: list[str], prefix: str) -> list[str]:
    """`prefix/<name>:latest` for every name, each checked as an image reference; the first
    bad one is refused naming it (before anything is built). All in one registry."""
    from builder.oci.registry import parse_reference

    if not prefix or prefix.endswith("/") or "@" in prefix:
        raise ApkImageError(f"--publish {prefix!r}: expected REGISTRY/PREFIX "
                            "(e.g. 127.0.0.1:5000/world)")
    refs = []
    for name in names:
        ref = f"{prefix}/{name}:latest"
        try:
            parse_reference(ref)
        except ApkImageError as exc:
            raise ApkImageError(f"--publish {prefix}: image {name!r}: {exc}") from None
        refs.append(ref)
    return refs


class BlobHomes:
    """Digests known to be in one registry, each with a repository that holds it (thread-safe:
    the blob pushes of one image ask from their worker threads)."""

    def __init__(self) -> None:
        self._homes: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> str:
        with self._lock:
            return self._homes.get(digest, "")

    def add(self, repo: str, digests: list[str]) -> None:
        with self._lock:
            for d in digests:
                self._homes.setdefault(d, repo)


def publish_world(images: list[WorldImage], *, mount_store: str = "",
                  done: Callable[[WorldImage, PublishedImage], None] = lambda w, p: None,
                  workers: int = PARALLEL_UPLOADS) -> list[PublishedImage]:
    """Push every image of `images` (one registry) in order; `done` hears of each. A blob a
    repository lacks is mounted from the repository that got it before in this run, else (a
    layer) from `mount_store` when given (a repository of the same registry: the run's
    content store, which may hold it), else uploaded. The first failure stops the push
    naming the image and its reference; what was pushed before it stays."""
    from builder.oci.layout import read_layout_image
    from builder.oci.registry import Registry, parse_reference, push_image

    if not images:
        return []
    hosts = {parse_reference(w.ref).registry for w in images}
    if len(hosts) != 1:
        raise ApkImageError(f"publish_world: one registry expected, got {sorted(hosts)}")
    registry = Registry.for_host(hosts.pop())
    homes = BlobHomes()
    published: list[PublishedImage] = []
    for n, w in enumerate(images):
        ref = parse_reference(w.ref)
        try:
            if n == 0:
                registry.ping()
            index, built, layers = read_layout_image(Path(w.layout))
            if index.digest != w.index_digest:
                raise ApkImageError(f"{w.layout} holds index {index.digest}, the build "
                                    f"made {w.index_digest}")
            own = {src.digest for src in layers}

            def source(digest: str, own: set[str] = own) -> str:
                return homes.get(digest) or (mount_store if digest in own else "")

            pushed = push_image(registry, ref.repository, [ref.tag], index, built, layers,
                                workers=workers, mount_from=source, head_manifests=True)
        except ApkImageError as exc:
            raise ApkImageError(f"{w.name}: publishing {w.ref}: {exc}") from None
        homes.add(ref.repository, [*pushed.uploaded, *pushed.mounted, *pushed.skipped])
        sizes = {src.digest: src.size for src in layers}
        sizes.update({img.config.digest: img.config.size for img in built})
        p = PublishedImage(w.ref, pushed.index_digest, sorted(pushed.uploaded),
                           sorted(pushed.mounted), sorted(pushed.skipped),
                           pushed.manifests_skipped,
                           sum(sizes.get(d, 0) for d in pushed.uploaded))
        published.append(p)
        done(w, p)
    return published
