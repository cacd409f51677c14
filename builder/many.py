"""Many images from one cache: the jobs of `apkimage build-many` and how they run.

A `Job` is one image (its config, where its OCI layout goes, the build options); `build_job`
builds it and returns an `ImageResult` (digests, wall and CPU seconds, the spans). Both are
plain picklable data, so an executor can ship them to other processes. `run_local` builds the
jobs one after another in this process, sharing the cache (and with `--layer-cache` the layers
already made): per image, the start-up of the interpreter is paid once, not per image.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import ApkImageError, ConfigError
from builder.plan import BuildOptions
from builder.util.gcpause import paused

if TYPE_CHECKING:
    from builder.layercache import KnownBlobs


@dataclass(frozen=True)
class Job:
    config: str
    out: str  # the OCI layout directory it writes
    tag: str
    options: BuildOptions


@dataclass
class ImageResult:
    config: str
    out: str
    index_digest: str
    wall_s: float
    cpu_s: float  # this process's CPU (all threads) during the build
    summary: dict[str, Any] = field(default_factory=dict)
    spans: dict[str, Any] = field(default_factory=dict)
    worker: str = ""  # where it ran (host:pid)

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config, "out": self.out, "index_digest": self.index_digest,
                "wall_s": self.wall_s, "cpu_s": self.cpu_s, "worker": self.worker,
                "image": self.summary, "spans": self.spans}


def plan_jobs(configs: Iterable[str], out_dir: Path, options: BuildOptions) -> list[Job]:
    """A job per config: OCI layout `out_dir/<config stem>`, tagged `<stem>:latest`; two
    configs of one stem are refused (their outputs would collide)."""
    jobs: list[Job] = []
    seen: dict[str, str] = {}
    for config in configs:
        stem = Path(config).stem
        if stem in seen:
            raise ConfigError(f"{config}: same name as {seen[stem]} (outputs would collide in "
                              f"{out_dir / stem})")
        seen[stem] = config
        if not Path(config).is_file():
            raise ConfigError(f"{config}: configuration file not found")
        jobs.append(Job(config, os.fspath(out_dir / stem), f"{stem}:latest",
                        replace(options, config=config, tag=f"{stem}:latest")))
    return jobs


def build_job(job: Job, known: KnownBlobs | None = None) -> ImageResult:
    """Build one job's image into its OCI layout (replacing an earlier one there). With
    `known` (the layout blobs of the run's earlier jobs in this process), a layer the layer
    cache says is this image's is linked from an earlier layout instead of copied from the
    cache, and this layout's layers are added to it."""
    import shutil
    import socket

    from builder.pipeline import build
    from builder.spans import SpanRecorder
    from builder.stages.registry import current

    out = Path(job.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rec = SpanRecorder()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.work-", dir=out.parent) as tmp, \
            _collected_after():
        result = build(job.options, Path(tmp), rec, known)
        staged = Path(tmp) / "out"
        with rec.span("oci", impl=job.options.impl.get("oci", "reference")) as s:
            write_output = current().get("oci", job.options.chosen()["oci"]).obj
            s.bytes_out = write_output(result.images, result.index, result.layers, staged,
                                       job.tag)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staged, out)
    if known is not None:
        for la in (la for arch in result.archs for la in arch.layers):
            # after every link: a link changes the file's ctime
            known.add(la.digest, out / "blobs" / "sha256" / la.digest.removeprefix("sha256:"))
    summary = result.summary()
    return ImageResult(job.config, job.out, summary["index_digest"],
                       time.perf_counter() - wall0, time.process_time() - cpu0, summary,
                       rec.to_json(), f"{socket.gethostname()}:{os.getpid()}")


@contextmanager
def _collected_after() -> Iterator[None]:
    """No cyclic GC during one image's build; after it, one collection, and what survives it
    (indexes, memos: what the next images reuse) is frozen out of later collections. A long
    process otherwise walks its ever larger heap of long-lived objects again and again
    (builder/util/gcpause.py says why the bulk of a build needs no collector)."""
    with paused():
        yield
    gc.collect()
    gc.freeze()


def run_local(jobs: list[Job], done: Callable[[ImageResult], None] = lambda r: None
              ) -> list[ImageResult]:
    """The jobs one after another in this process; `done` hears of each finished image.
    The first failure stops the run, naming the config. Layers the layer cache gives an
    image are linked from the run's earlier layouts where they are (`KnownBlobs`)."""
    from builder.layercache import KnownBlobs

    known = KnownBlobs()
    results = []
    for job in jobs:
        try:
            r = build_job(job, known)
        except ApkImageError as exc:
            raise ApkImageError(f"{job.config}: {exc}") from None
        results.append(r)
        done(r)
    return results
