"""The speed of light of a hot build: the least work any builder must do for the same image.

A hot build that stitches the layer from the packages' own compressed bytes (DESIGN.md §4)
cannot do less than read the cached data once and compute two SHA-256s: the diffID over the
uncompressed tar (the packages' data tars) and the digest over the blob (about the packages'
compressed bytes). `measure` times exactly that, on the files of a warm cache, so the harness
can print each implementation's hot time beside the floor: once on one core (the two hashes one
after the other, the floor the targets are stated against) and once with the two hashes on two
threads side by side (what a builder using both cores of this machine could at best reach).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from builder.repo.cache import EXPANDED_DATA_TAR, PACKAGE_FILE, Cache

_CHUNK = 4 << 20


@dataclass(frozen=True)
class SpeedOfLight:
    seconds: float  # best of the repeats, one core
    parallel_seconds: float  # best of the repeats, the two hashes on two threads
    uncompressed_bytes: int
    compressed_bytes: int
    packages: int

    def describe(self) -> str:
        return (f"speed of light {self.seconds:.3f} s on one core "
                f"({self.parallel_seconds:.3f} s with the two hashes on two threads): read "
                f"{self.packages} packages' cached data once "
                f"({self.uncompressed_bytes / 1e6:.0f} MB tar + "
                f"{self.compressed_bytes / 1e6:.0f} MB compressed) and SHA-256 both")


def cached_packages(cache_dir: Path) -> list[tuple[Path, Path]]:
    """(data tar, .apk) of every package the fast expand left in `cache_dir`."""
    out = []
    for tar in sorted(Cache(cache_dir).base.glob(f"apk/*/*/{EXPANDED_DATA_TAR}")):
        apk = tar.with_name(PACKAGE_FILE)
        if apk.is_file():
            out.append((tar, apk))
    return out


def _hash_files(paths: list[Path], buf: bytearray) -> tuple[str, int]:
    h = hashlib.sha256()
    view = memoryview(buf)
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
                total += n
    return h.hexdigest(), total


def measure(cache_dir: Path, repeats: int = 3) -> SpeedOfLight | None:
    """Best-of-`repeats` time to read and hash the cached data; None if the cache holds no
    fast-expanded package with its .apk (e.g. a reference-only or local-repository run)."""
    pairs = cached_packages(cache_dir)
    if not pairs:
        return None
    tars, apks = [t for t, _ in pairs], [a for _, a in pairs]
    buf, buf2 = bytearray(_CHUNK), bytearray(_CHUNK)
    best = best_parallel = float("inf")
    sizes = (0, 0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, u = _hash_files(tars, buf)
        _, c = _hash_files(apks, buf)
        best = min(best, time.perf_counter() - t0)
        sizes = (u, c)
        t0 = time.perf_counter()
        other = threading.Thread(target=_hash_files, args=(apks, buf2))
        other.start()
        _hash_files(tars, buf)
        other.join()
        best_parallel = min(best_parallel, time.perf_counter() - t0)
    return SpeedOfLight(best, best_parallel, sizes[0], sizes[1], len(pairs))
