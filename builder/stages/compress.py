"""The `compress` stage: the layer tar -> one gzip member (fixed header, mtime 0) and its
SHA-256 (the layer digest).

Interface: `compress(tar_path, out_path) -> CompressResult`. Implementations:
`reference` = stdlib zlib at level 6 (zlib's own default); `zlib:N` = zlib at level N (the
harness uses `zlib:9` as a deliberately slower real configuration); `isal:N` = ISA-L.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.apk.gzipstream import GzipCompressor

CHUNK = 1 << 20


@dataclass
class CompressResult:
    path: Path
    digest: str  # "sha256:<hex>"
    size: int


def compress_zlib(tar_path: Path, out_path: Path, level: int = 6,
                  engine: str = "zlib") -> CompressResult:
    comp = GzipCompressor(level, engine)
    h = hashlib.sha256()
    size = 0
    with open(tar_path, "rb") as src, open(out_path, "wb") as dst:
        while True:
            chunk = src.read(CHUNK)
            out = comp.compress(chunk) if chunk else comp.flush()
            if out:
                h.update(out)
                dst.write(out)
                size += len(out)
            if not chunk:
                break
    return CompressResult(out_path, "sha256:" + h.hexdigest(), size)


def compress_reference(tar_path: Path, out_path: Path) -> CompressResult:
    return compress_zlib(tar_path, out_path, 6)


_LEVELS = {"zlib": range(0, 10), "isal": range(0, 4)}


def parametric(name: str) -> Callable[[Path, Path], CompressResult] | None:
    """`zlib:N` (0..9) or `isal:N` (0..3) -> a compressor at that level; None otherwise.
    isal's bytes differ from zlib's, so its digests differ (a different compressor setting)."""
    engine, sep, level = name.partition(":")
    if engine not in _LEVELS or not sep or not level.isdigit() \
            or int(level) not in _LEVELS[engine]:
        return None
    lvl = int(level)
    return lambda src, dst: compress_zlib(src, dst, lvl, engine)


IMPLEMENTATIONS: dict[str, Callable[[Path, Path], CompressResult]] = {
    "reference": compress_reference,
}
PARAMETRIC_HELP = ["zlib:N (N = 0..9; reference = zlib:6)", "isal:N (N = 0..3)"]
