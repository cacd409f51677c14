"""The speed of light of a hot build: the least work any builder must do for the same image.

A hot build that stitches the layer from the packages' own compressed bytes (DESIGN.md §4)
cannot do less than read the cached data once and compute two SHA-256s: the diffID over the
uncompressed tar (the packages' data tars) and the digest over the blob (about the packages'
compressed bytes). `measure` times exactly that, on the files of a warm cache, so the harness
can print each implementation's hot time beside the floor.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from builder.repo.cache import EXPANDED_DATA_TAR, PACKAGE_FILE

_CHUNK = 4 << 20


@dataclass(frozen=True)
class SpeedOfLight:
    seconds: float  # best of the repeats
    uncompressed_bytes: int
    compressed_bytes: int
    packages: int

    def describe(self) -> str:
        return (f"speed of light {self.seconds:.3f} s: read {self.packages} packages' cached "
                f"data once ({self.uncompressed_bytes / 1e6:.0f} MB tar + "
                f"{self.compressed_bytes / 1e6:.0f} MB compressed) and SHA-256 both")


def cached_packages(cache_dir: Path) -> list[tuple[Path, Path]]:
    """(data tar, .apk) of every package the fast expand left in `cache_dir`."""
    out = []
    for tar in sorted(Path(cache_dir).glob(f"v1/apk/*/*/{EXPANDED_DATA_TAR}")):
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
    buf = bytearray(_CHUNK)
    best = float("inf")
    sizes = (0, 0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, u = _hash_files([t for t, _ in pairs], buf)
        _, c = _hash_files([a for _, a in pairs], buf)
        best = min(best, time.perf_counter() - t0)
        sizes = (u, c)
    return SpeedOfLight(best, sizes[0], sizes[1], len(pairs))
