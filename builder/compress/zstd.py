"""zstd layer compressor (`compress=zstd:N`): OCI's `tar+zstd` layer media type.

The frame is written with a checksum and without a content size (a stream does not know it),
and the input is fed in fixed 1 MiB units whatever the caller's pieces, so the bytes depend
only on the level and the input, the same from a finished tar as from a stream. Compression,
hashing and writing run on a worker thread (zstandard releases the GIL), overlapping whatever
produces the stream.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Future

    from builder.stages.base import BlobResult

MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"
LEVELS = range(1, 20)  # zstd's regular levels (20-22 need --ultra's memory)
UNIT = 1 << 20
_DEPTH = 4  # units queued for the worker at most


class ZstdSink:
    """Write-only zstd frame producer (the `Sink` contract)."""

    def __init__(self, out_path: Path, level: int) -> None:
        import hashlib
        from concurrent.futures import ThreadPoolExecutor

        import zstandard

        self.path = Path(out_path)
        self._comp = zstandard.ZstdCompressor(level=level, write_checksum=True,
                                              write_content_size=False).compressobj()
        self._hash = hashlib.sha256()
        self._pending = bytearray()
        self._size_in = self._size_out = 0
        self._inflight: list[Future[None]] = []
        self._closed = False
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="zstd-sink")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise ValueError("ZstdSink: write() after close()")
        self._size_in += len(data)
        self._pending += data
        while len(self._pending) >= UNIT:
            unit = bytes(self._pending[:UNIT])
            del self._pending[:UNIT]
            self._submit(self._compress, unit)

    def reusable_buffer(self) -> bytearray | None:
        return None  # every piece is copied into the pending buffer

    def close(self) -> BlobResult:
        if self._closed:
            raise ValueError("ZstdSink: close() twice")
        try:
            if self._pending:
                self._submit(self._compress, bytes(self._pending))
                self._pending = bytearray()
            self._submit(self._finish)
            for f in self._inflight:
                f.result()
        except BaseException:
            self.abort()
            raise
        self._shutdown()
        from builder.stages.base import BlobResult

        return BlobResult(self.path, "sha256:" + self._hash.hexdigest(), self._size_out,
                          self._size_in)

    def abort(self) -> None:
        if self._closed:
            return
        self._shutdown(cancel=True)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ZstdSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()

    def _submit(self, job: Any, *args: Any) -> None:
        self._inflight.append(self._worker.submit(job, *args))
        while len(self._inflight) > _DEPTH:
            self._inflight.pop(0).result()  # back-pressure; re-raises worker errors

    def _emit(self, out: bytes) -> None:
        if out:
            self._hash.update(out)
            self._file.write(out)
            self._size_out += len(out)

    def _compress(self, unit: bytes) -> None:
        self._emit(self._comp.compress(unit))

    def _finish(self) -> None:
        self._emit(self._comp.flush())

    def _shutdown(self, cancel: bool = False) -> None:
        self._closed = True
        self._worker.shutdown(wait=True, cancel_futures=cancel)
        self._file.close()


class ZstdSetting:
    """One zstd level (the `Compressor` contract of builder/stages/base.py)."""

    media_type = MEDIA_TYPE
    suffix = ".zst"
    deflate_engine = None  # not DEFLATE: a stitched layer cannot use it

    def __init__(self, name: str, level: int) -> None:
        if level not in LEVELS:
            raise ValueError(f"{name}: zstd level {level} outside 1..19")
        self.name, self.level = name, level

    def sink(self, out_path: Path) -> ZstdSink:
        return ZstdSink(out_path, self.level)

    def compress_file(self, tar_path: Path, out_path: Path) -> BlobResult:
        sink = self.sink(out_path)
        with sink, open(tar_path, "rb") as src:
            while chunk := src.read(UNIT):
                sink.write(chunk)
            return sink.close()

    def settings(self) -> dict[str, str]:
        return {"compressor": "zstd", "level": str(self.level), "mode": "serial",
                "block_size": "0", "threads": "1"}


def parse_zstd(name: str) -> ZstdSetting | None:
    """`zstd:N` (N = 1..19) -> that setting; None otherwise."""
    engine, sep, level = name.partition(":")
    if engine != "zstd" or not sep or not level.isdigit() or int(level) not in LEVELS:
        return None
    return ZstdSetting(name, int(level))
