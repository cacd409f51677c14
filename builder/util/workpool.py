"""Per-package work for the optimised fetch and expand stages: cheap jobs on this thread,
the rest on a thread pool, results in package order.

Both stages see the same mix on a hot build: most packages need only a few KiB read and some
JSON parsed (Python work that holds the GIL, so threads would only add switching), a few
need a download, a hash pass or a decompression (I/O, hashlib and zlib release the GIL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def quick_then_pooled(items: Sequence[T], quick: Callable[[T], R | None],
                      slow: Callable[[T], R], *, size: Callable[[T], int], workers: int,
                      name: str) -> list[R]:
    """`quick(item)` for every item, in order, on this thread; None means "not without the
    slow path". Those items run `slow(item)` on a pool of up to `workers` threads, largest
    `size` first, so the longest job does not start last. Returns the results in item
    order; the first failure in item order is raised, and jobs not yet started are
    cancelled."""
    done: dict[int, R | Exception] = {}
    todo: list[int] = []
    for i, item in enumerate(items):
        try:
            got = quick(item)
        except Exception as exc:  # noqa: BLE001 - raised below, in item order
            done[i] = exc
            continue
        if got is None:
            todo.append(i)
        else:
            done[i] = got
    if not todo:
        return [_value(done[i]) for i in range(len(items))]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))),
                            thread_name_prefix=name) as pool:
        futures: dict[int, Future[R]] = {
            i: pool.submit(slow, items[i]) for i in sorted(todo, key=lambda i: -size(items[i]))}
        try:
            return [_value(done[i]) if i in done else futures[i].result()
                    for i in range(len(items))]
        except BaseException:
            for fut in futures.values():
                fut.cancel()
            raise


def _value(got: R | Exception) -> R:
    if isinstance(got, Exception):
        raise got
    return got
