"""Fan-out: the jobs of `apkimage build-many --executor dask` (builder/many.py) built on a
Dask `distributed` cluster, one task (`build_job`) per image.

`--scheduler tcp://HOST:PORT` connects to a running cluster (`dask scheduler`, and
`dask worker tcp://HOST:PORT` on each machine); without it a `LocalCluster` of `--workers N`
worker processes (one thread each, every port on 127.0.0.1, no dashboard) is started for
the run and stopped after it. A cluster's machines have caches of their own; the local
cluster's workers get the same: worker `n` builds on `<cache>/worker-<n>` (the name survives
a restart, so does the cache). Workers of a running cluster use the cache directory the
command names (default: each worker's own `~/.cache/apkimage`), unless `worker_caches`.

With `--content-store REGISTRY/REPO` the layer caches share a second tier
(builder/oci/content_store.py), and while a worker builds a layer nobody has stored yet it
holds a cluster-wide `distributed.Lock` on the layer's key: another worker that needs the same
layer waits, then pulls it, so a layer is built (and its blob pushed) once per cluster. A wait
longer than CLAIM_TIMEOUT_S builds the layer anyway (the same bytes). Packages are shared the
same way (builder/repo/fetch.py): a worker downloading a package nobody has stored holds a
lock on its `C:`, so each package is downloaded from its repository once per cluster.

Failures: a build that fails on its own terms (a bad config, a package that is not there:
any ApkImageError but a registry fault) is not retried and stops the run naming its config, as
the local executor does; anything else (a registry fault, a worker process killed mid-build:
the scheduler moves its task to another worker) costs a retry (`retries`, Dask's own).

Imported only by `--executor dask`: `distributed` is the optional `world` extra.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from builder.errors import ApkImageError, RegistryError
from builder.many import ImageResult, Job, build_job

if TYPE_CHECKING:
    from builder.layercache import KnownBlobs

RETRIES = 2
CLAIM_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class _Failed:
    """A build that failed on its own terms: reported, not retried."""

    message: str


def worker_cache_dir(base: str | None, name: object) -> str:
    """The cache of worker `name` of a local cluster: `<base>/worker-<name>`."""
    from builder.repo.cache import default_cache_dir

    root = base if base is not None else os.fspath(default_cache_dir())
    return os.path.join(root, f"worker-{name}")


@contextmanager
def _dask_claim(key: str, kind: str = "layer", worker: Any = None) -> Iterator[bool]:
    """A cluster-wide lock on layer key `key` (or, `kind` "apk", on a package's `C:` hex;
    yields False after CLAIM_TIMEOUT_S). With `worker`, bound to it: the fetch stage takes
    package claims on its own threads, where Dask cannot find the task's worker."""
    from distributed import Lock

    lock = Lock(f"apkimage-{kind}-{key}", scheduler_rpc=getattr(worker, "scheduler", None),
                loop=getattr(worker, "loop", None))
    got = bool(lock.acquire(timeout=CLAIM_TIMEOUT_S))
    try:
        yield got
    finally:
        if got:
            lock.release()


# The layout blobs this worker process wrote for its latest run's tasks, by run: a later
# task of that run links them (builder/layercache.py KnownBlobs); runs never share files.
_known: tuple[str, KnownBlobs] | None = None


def build_on_worker(job: Job, worker_caches: bool, run: str = "") -> ImageResult | _Failed:
    """The task: `job` built on this worker (on its own cache with `worker_caches`)."""
    from distributed import get_worker

    from builder import layercache
    from builder.repo import fetch

    worker = get_worker()
    if worker_caches:
        opts = job.options
        job = replace(job, options=replace(
            opts, cache_dir=worker_cache_dir(opts.cache_dir, worker.name)))
    global _known
    shared = bool(job.options.content_store)
    layercache.set_claim(_dask_claim if shared else None)
    fetch.set_package_claim(
        (lambda key: _dask_claim(key, "apk", worker)) if shared else None)
    if _known is None or _known[0] != run:
        _known = (run, layercache.KnownBlobs())
    try:
        return build_job(job, _known[1])
    except RegistryError:
        raise  # the shared store's fault, maybe passing: retried
    except ApkImageError as exc:
        return _Failed(str(exc))


def run_dask(jobs: list[Job], done: Callable[[ImageResult], None] = lambda r: None, *,
             scheduler: str = "", workers: int = 2, worker_caches: bool | None = None,
             retries: int = RETRIES) -> list[ImageResult]:
    """Build `jobs` on the cluster at `scheduler` (or a LocalCluster of `workers` processes);
    the results in the jobs' order. `done` hears of each image as it finishes. The first
    failure cancels the jobs not yet finished and raises, naming the config."""
    import logging

    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ApkImageError("--executor dask needs the `distributed` package: "
                            "pip install 'apkimage[world]'") from None

    if worker_caches is None:
        worker_caches = not scheduler
    with ExitStack() as stack:
        if scheduler:
            client = stack.enter_context(Client(scheduler, timeout=CONNECT_TIMEOUT_S))
        else:
            if workers < 1:
                raise ApkImageError(f"--workers {workers}: at least one worker is needed")
            cluster = stack.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                scheduler_port=0, dashboard_address=None, worker_dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # its HTTP server
                silence_logs=logging.WARNING))
            client = stack.enter_context(Client(cluster))
        futures: dict[Any, int] = {}
        run = uuid.uuid4().hex[:12]  # task keys unique to this run on a shared scheduler
        for i, job in enumerate(jobs):
            fut = client.submit(build_on_worker, job, worker_caches, run, retries=retries,
                                pure=False, key=f"apkimage-{os.path.basename(job.out)}-{run}")
            futures[fut] = i
        results: dict[int, ImageResult] = {}
        for fut in as_completed(list(futures)):
            job = jobs[futures[fut]]
            try:
                out = fut.result()
            except ApkImageError as exc:
                client.cancel(list(futures))
                raise ApkImageError(f"{job.config}: {exc}") from None
            except Exception as exc:  # the cluster's: a worker lost too often, a timeout
                client.cancel(list(futures))
                raise ApkImageError(f"{job.config}: on the cluster: {type(exc).__name__}: "
                                    f"{exc}") from None
            if isinstance(out, _Failed):
                client.cancel(list(futures))
                raise ApkImageError(f"{job.config}: {out.message}")
            results[futures[fut]] = out
            done(out)
    return [results[i] for i in range(len(jobs))]
