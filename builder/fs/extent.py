"""File content by reference: an `Extent` is a byte range of a file (usually a package's
cached, decompressed data tar), read without copying the whole file."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from builder.errors import FormatError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


@dataclass(frozen=True)
class Extent:
    """`size` bytes at `offset` of the file `path` (a package's decompressed data tar).

    `fileobj`, when given, is an open handle on `path` that storage which copies the bytes
    may use instead of opening the file again; it is not part of the value."""

    path: Path
    offset: int
    size: int
    fileobj: BinaryIO | None = field(default=None, compare=False, repr=False)


Content = bytes | Extent


def read_extent(ext: Extent) -> bytes:
    """The bytes of `ext` (FormatError if the file is shorter)."""
    parts = []
    fd = os.open(ext.path, os.O_RDONLY)
    try:
        pos, end = ext.offset, ext.offset + ext.size
        while pos < end:
            chunk = os.pread(fd, min(end - pos, 1 << 30), pos)
            if not chunk:
                raise FormatError(f"{ext.path}: truncated at byte {pos}, expected data up to "
                                  f"byte {end}")
            parts.append(chunk)
            pos += len(chunk)
    finally:
        os.close(fd)
    return b"".join(parts)


class ExtentReader(io.RawIOBase):
    """A read-only file over one Extent (reads stop at its end)."""

    def __init__(self, ext: Extent) -> None:
        super().__init__()
        self._fd = os.open(ext.path, os.O_RDONLY)
        self._pos = ext.offset
        self._end = ext.offset + ext.size

    def readable(self) -> bool:
        return True

    def readinto(self, b: WriteableBuffer) -> int:
        view = memoryview(b)
        n = min(len(view), self._end - self._pos)
        if n <= 0:
            return 0
        got = os.preadv(self._fd, [view[:n]], self._pos)
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
