"""Streaming, deterministic gzip compression on worker threads.

A `GzipSink` takes the uncompressed stream in pieces of any size from one producer thread
and writes ONE gzip member (the fixed header of `builder.deflate.gzipstream`: mtime 0, OS 255)
to a file, computing the SHA-256 of what it writes on the way. The producer only hands
over bytes; compression, CRC, hashing and writing run on worker threads (zlib, ISA-L and
hashlib release the GIL), so they overlap with whatever produces the stream.

Two modes, both deterministic (the bytes depend only on the input, the engine, the level
and `block_size` — never on how the input was split into `write()` calls or on `threads`):

- serial (`block_size=0`): one continuous deflate stream fed in 1 MiB pieces, exactly as
  `builder.compress.gzip.compress_serial` feeds a file, so the bytes are those of that
  function for the same engine and level (`zlib:6` = the reference compressor).
- blocks (`block_size>0`): pigz-style — the input is cut into `block_size` blocks, each
  deflated independently with the previous block's last 32 KiB as preset dictionary and
  ended by a sync flush, in parallel on `threads` workers; the CRCs are combined in order
  and an empty final block ends the stream.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from isal import isal_zlib

from builder.deflate.gzipstream import GZIP_HEADER, engine_module
from builder.stages.base import BlobResult

SERIAL_UNIT = 1 << 20  # the piece size compress_serial reads; keeps serial bytes identical
WINDOW = 1 << 15



class GzipSink:
    """Write-only gzip member producer; see the module docstring."""

    def __init__(self, out_path: Path, engine: str = "zlib", level: int = 6, *,
                 threads: int = 1, block_size: int = 0) -> None:
        self.path = Path(out_path)
        self.engine, self.level = engine, level
        self.block_size = block_size
        self.threads = max(1, threads) if block_size else 1
        self._lib = engine_module(engine)
        self._unit = block_size or SERIAL_UNIT
        self._pending = bytearray()
        self._size_in = 0
        self._crc = 0
        self._size_out = 0
        self._hash = hashlib.sha256()
        self._prev_tail: bytes | bytearray = b""
        self._closed = False
        self._inflight: deque[Future[None]] = deque()
        self._free: deque[bytearray] = deque()  # unit-sized buffers the workers are done with
        self._depth = self.threads + 2
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="gzsink-write")
        self._pool = (ThreadPoolExecutor(self.threads, thread_name_prefix="gzsink-deflate")
                      if block_size else None)
        if not block_size:
            self._stream = self._compressobj()
        self._emit(GZIP_HEADER)

    # ------------------------------------------------------------------ producer side

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue `data` for compression. A piece of exactly the unit size (1 MiB, or
        `block_size`) arriving on a unit boundary is kept by reference, not copied: the
        caller must not modify it afterwards (hand over a fresh buffer)."""
        if self._closed:
            raise ValueError("GzipSink: write() after close()")
        n = len(data)
        if not n:
            return
        self._size_in += n
        unit = self._unit
        if not self._pending and n == unit:
            self._submit(data if not isinstance(data, memoryview) else bytes(data))
            return
        self._pending += data
        if len(self._pending) >= unit:
            view = memoryview(self._pending)
            whole = len(view) - len(view) % unit
            for i in range(0, whole, unit):
                self._submit(bytes(view[i:i + unit]))
            rest = bytes(view[whole:])
            view.release()
            self._pending = bytearray(rest)

    def reusable_buffer(self) -> bytearray | None:
        """A unit-sized bytearray handed over by `write()` earlier that the workers no
        longer use (for the producer to fill again instead of allocating), or None."""
        try:
            return self._free.popleft()
        except IndexError:
            return None

    def _recycle(self, block: bytes | bytearray) -> None:
        if isinstance(block, bytearray) and len(block) == self._unit:
            self._free.append(block)

    def close(self) -> BlobResult:
        """Compress what is left, finish the member, wait for the workers; the result."""
        if self._closed:
            raise ValueError("GzipSink: close() twice")
        try:
            if self._pending:
                self._submit(bytes(self._pending))
                self._pending = bytearray()
            self._writer.submit(self._finish)
            self._writer.shutdown(wait=True)
            while self._inflight:
                self._inflight.popleft().result()
        except BaseException:
            self.abort()
            raise
        self._shutdown()
        return BlobResult(self.path, "sha256:" + self._hash.hexdigest(), self._size_out,
                          self._size_in)

    def abort(self) -> None:
        """Stop the workers and drop the output file (after an error)."""
        if self._closed:
            return
        self._inflight.clear()
        self._shutdown(cancel=True)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> GzipSink:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()

    # ------------------------------------------------------------------ workers

    def _shutdown(self, cancel: bool = False) -> None:
        self._closed = True
        self._writer.shutdown(wait=True, cancel_futures=cancel)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
        self._file.close()

    def _submit(self, block: bytes | bytearray) -> None:
        if self._pool is None:
            job: Callable[[], None] = lambda: self._serial(block)  # noqa: E731
        else:
            dictionary = self._prev_tail
            self._prev_tail = block[-WINDOW:]
            fut = self._pool.submit(self._deflate_block, block, dictionary)
            job = lambda: self._retire_block(fut, block)  # noqa: E731
        self._inflight.append(self._writer.submit(job))
        while len(self._inflight) > self._depth:
            self._inflight.popleft().result()  # back-pressure; re-raises worker errors

    def _compressobj(self, dictionary: bytes | bytearray = b"") -> Any:
        """A raw deflate compressor set up as GzipCompressor sets it up (same bytes)."""
        lib = self._lib
        mem = 9 if lib is zlib else lib.DEF_MEM_LEVEL
        if dictionary:
            return lib.compressobj(self.level, lib.DEFLATED, -15, mem, lib.Z_DEFAULT_STRATEGY,
                                   dictionary)
        return lib.compressobj(self.level, lib.DEFLATED, -15, mem)

    def _emit(self, out: bytes) -> None:
        if out:
            self._hash.update(out)
            self._file.write(out)
            self._size_out += len(out)

    def _serial(self, piece: bytes | bytearray) -> None:
        self._crc = zlib.crc32(piece, self._crc)
        self._emit(self._stream.compress(piece))
        self._recycle(piece)

    def _deflate_block(self, block: bytes | bytearray,
                       dictionary: bytes | bytearray) -> tuple[bytes, int]:
        c = self._compressobj(dictionary)
        out = c.compress(block) + c.flush(self._lib.Z_SYNC_FLUSH)
        return out, self._lib.crc32(block)

    def _retire_block(self, fut: Future[tuple[bytes, int]], block: bytes | bytearray) -> None:
        out, crc = fut.result()
        self._crc = isal_zlib.crc32_combine(self._crc, crc, len(block))
        self._emit(out)
        self._recycle(block)

    def _finish(self) -> None:
        if self._pool is None:
            tail = self._stream.flush()
        else:
            tail = self._compressobj().flush()  # an empty final block
        self._emit(tail + struct.pack("<II", self._crc & 0xFFFFFFFF,
                                      self._size_in & 0xFFFFFFFF))

