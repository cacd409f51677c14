"""gzip layer compressors: one gzip member (fixed header, mtime 0) per layer.

A `GzipSetting` is one engine, level and mode; its bytes depend only on those and the input,
never on how the input was split or on the thread count:

- serial (`block_size=0`): one continuous deflate stream. `compress_serial` is the
  straightforward loop over a finished tar; `GzipSink` (builder/deflate/sink.py) gives the same
  bytes for a stream (`zlib:6` is the reference compressor);
- blocks (`isal-mt`): independent `MT_BLOCK_SIZE` blocks with a 32 KiB preset dictionary,
  compressed on all CPUs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engines are loaded when something is compressed
    from builder.deflate.sink import GzipSink
    from builder.stages.base import BlobResult

MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CHUNK = 1 << 20
MT_BLOCK_SIZE = 1 << 20  # pinned: part of the blob bytes of `isal-mt`
MT_LEVEL = 1  # pinned default level of `isal-mt`
LEVELS = {"zlib": range(0, 10), "isal": range(0, 4)}


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def compress_serial(tar_path: Path, out_path: Path, level: int = 6,
                    engine: str = "zlib") -> BlobResult:
    """The tar file read in 1 MiB pieces through one deflate stream."""
    import hashlib

    from builder.deflate.gzipstream import GzipCompressor
    from builder.stages.base import BlobResult

    comp = GzipCompressor(level, engine)
    h = hashlib.sha256()
    size = size_in = 0
    with open(tar_path, "rb") as src, open(out_path, "wb") as dst:
        while True:
            chunk = src.read(CHUNK)
            size_in += len(chunk)
            out = comp.compress(chunk) if chunk else comp.flush()
            if out:
                h.update(out)
                dst.write(out)
                size += len(out)
            if not chunk:
                break
    return BlobResult(out_path, "sha256:" + h.hexdigest(), size, size_in)


class GzipSetting:
    """One gzip compressor setting (the `Compressor` contract of builder/stages/base.py)."""

    media_type = MEDIA_TYPE
    suffix = ".gz"

    def __init__(self, name: str, engine: str, level: int, *, block_size: int = 0,
                 threads: int = 1) -> None:
        if level not in LEVELS[engine]:
            raise ValueError(f"{name}: level {level} outside {engine}'s "
                             f"{LEVELS[engine].start}..{LEVELS[engine].stop - 1}")
        self.name, self.engine, self.level = name, engine, level
        self.block_size, self.threads = block_size, threads
        self.deflate_engine = (engine, level)

    def compress_file(self, tar_path: Path, out_path: Path) -> BlobResult:
        if not self.block_size:
            return compress_serial(tar_path, out_path, self.level, self.engine)
        sink = self.sink(out_path)
        with sink, open(tar_path, "rb") as src:
            while chunk := src.read(CHUNK):
                sink.write(chunk)
            return sink.close()

    def sink(self, out_path: Path) -> GzipSink:
        from builder.deflate.sink import GzipSink

        return GzipSink(out_path, self.engine, self.level, threads=self.threads,
                        block_size=self.block_size)

    def settings(self) -> dict[str, str]:
        return {"compressor": self.engine, "level": str(self.level),
                "mode": "blocks" if self.block_size else "serial",
                "block_size": str(self.block_size), "threads": str(self.threads)}


def parse_gzip(name: str) -> GzipSetting | None:
    """`zlib:N` (0..9), `isal:N` (0..3) or `isal-mt:N` (0..3) -> that setting; None
    otherwise. isal's bytes differ from zlib's, so its digests differ."""
    engine, sep, level = name.partition(":")
    if not sep or not level.isdigit():
        return None
    lvl = int(level)
    if engine == "isal-mt" and lvl in LEVELS["isal"]:
        return GzipSetting(name, "isal", lvl, block_size=MT_BLOCK_SIZE, threads=cpu_threads())
    if engine in LEVELS and lvl in LEVELS[engine]:
        return GzipSetting(name, engine, lvl)
    return None
