"""The `compress` stage: the layer tar -> one gzip member (fixed header, mtime 0) and its
SHA-256 (the layer digest).

Interface: `compress(tar_path, out_path) -> CompressResult`. Every implementation is a
`Compressor`, which can also be used as a stream: `sink(out_path)` returns a
`builder.gzsink.GzipSink` that a streaming layer writes the tar into while it is being
generated (the pipeline does this when the layer implementation streams; the bytes are the
same as compressing the finished tar file). `settings()` goes into the compress span's
attributes — and from there into the run record — never into the image config.

Implementations: `reference` = stdlib zlib at level 6 (zlib's own default); `zlib:N` = zlib
at level N (the harness uses `zlib:9` as a deliberately slower real configuration); `isal:N`
= ISA-L, one serial stream; `isal-mt` (the `fast` profile; `isal-mt:N` for level N) = ISA-L
level 1 in independent 1 MiB blocks with a 32 KiB preset dictionary, compressed on all CPUs.
Its bytes depend only on the level and the block size (pinned here), not on the thread count.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.apk.gzipstream import GzipCompressor
from builder.gzsink import GzipSink

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


MT_BLOCK_SIZE = 1 << 20  # pinned: part of the blob bytes of `isal-mt`
MT_LEVEL = 1  # pinned default level of `isal-mt`


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class Compressor:
    """One compressor setting, for a finished tar (`__call__`) or a stream (`sink`)."""

    def __init__(self, name: str, engine: str, level: int, *, block_size: int = 0,
                 threads: int = 1,
                 whole_file: Callable[[Path, Path], CompressResult] | None = None) -> None:
        self.name, self.engine, self.level = name, engine, level
        self.block_size, self.threads = block_size, threads
        self._whole_file = whole_file

    def __call__(self, tar_path: Path, out_path: Path) -> CompressResult:
        if self._whole_file is not None:
            return self._whole_file(tar_path, out_path)
        sink = self.sink(out_path)
        with sink, open(tar_path, "rb") as src:
            while chunk := src.read(CHUNK):
                sink.write(chunk)
        res = sink.close()
        return CompressResult(res.path, res.digest, res.size)

    def sink(self, out_path: Path) -> GzipSink:
        return GzipSink(out_path, self.engine, self.level, threads=self.threads,
                        block_size=self.block_size)

    def settings(self) -> dict[str, str]:
        """Span attributes naming the setting. Strings, so that the harness (which adds up
        numeric attributes across archs) keeps them as they are."""
        return {"compressor": self.engine, "level": str(self.level),
                "mode": "blocks" if self.block_size else "serial",
                "block_size": str(self.block_size), "threads": str(self.threads)}


_LEVELS = {"zlib": range(0, 10), "isal": range(0, 4)}


def parametric(name: str) -> Compressor | None:
    """`zlib:N` (0..9), `isal:N` or `isal-mt:N` (0..3) -> a compressor at that level; None
    otherwise. isal's bytes differ from zlib's, so its digests differ (a different
    compressor setting)."""
    engine, sep, level = name.partition(":")
    if engine == "isal-mt" and sep and level.isdigit() and int(level) in _LEVELS["isal"]:
        return Compressor(name, "isal", int(level), block_size=MT_BLOCK_SIZE,
                          threads=cpu_threads())
    if engine not in _LEVELS or not sep or not level.isdigit() \
            or int(level) not in _LEVELS[engine]:
        return None
    lvl = int(level)
    return Compressor(name, engine, lvl,
                      whole_file=lambda src, dst: compress_zlib(src, dst, lvl, engine))


IMPLEMENTATIONS: dict[str, Compressor] = {
    "reference": Compressor("reference", "zlib", 6, whole_file=compress_reference),
    "isal-mt": Compressor("isal-mt", "isal", MT_LEVEL, block_size=MT_BLOCK_SIZE,
                          threads=cpu_threads()),
}
FAST = "isal-mt"
PARAMETRIC_HELP = ["zlib:N (N = 0..9; reference = zlib:6)", "isal:N (N = 0..3)",
                   "isal-mt:N (N = 0..3; isal-mt = isal-mt:1)"]
