"""SHA-256 on a worker thread, fed in submission order: a digest is computed on the second
core while the main thread produces the bytes (hashlib releases the GIL on large buffers).
Small buffers are gathered and hashed in batches."""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor

_SMALL = 64 << 10  # smaller buffers are gathered and hashed in batches of about _BATCH
_BATCH = 1 << 20


class OrderedHasher:
    """One SHA-256 fed on its own thread. Buffers handed over must stay valid until
    `mark()`'s future completes."""

    def __init__(self, name: str) -> None:
        self._h = hashlib.sha256()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._last: Future | None = None
        self._small = bytearray()  # copies of small buffers, not yet handed to the thread

    def update(self, data: bytes | memoryview) -> None:
        if len(data) < _SMALL:
            self._small += data
            if len(self._small) >= _BATCH:
                self._submit_small()
            return
        self._submit_small()
        self._last = self._pool.submit(self._hash, [data])

    def _hash(self, box: list[bytes | bytearray | memoryview]) -> None:
        # The buffer is dropped before the future completes, so a map whose hashing is done
        # has no view left on it and can be closed.
        self._h.update(box.pop())

    def _submit_small(self) -> None:
        if self._small:
            # Handed over as it is (no copy); a new buffer gathers the next batch.
            self._last = self._pool.submit(self._hash, [self._small])
            self._small = bytearray()

    def mark(self) -> Future | None:
        """A future done once everything handed over so far is hashed."""
        self._submit_small()
        return self._last

    def hexdigest(self) -> str:
        last = self.mark()
        if last is not None:
            last.result()
        return self._h.hexdigest()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
