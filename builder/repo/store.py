"""Content-addressed storage: bodies named by their digest, `sha256:<hex>` (the OCI form).

`ContentStore` is the interface: `has`, `open` (verified) and `put` (atomic, digest-checked).
`LocalContentStore` implements it over a directory laid out as `<root>/sha256/<hex>` — the
cache's `v1/blobs/sha256/<hex>` (builder/repo/cache.py) and an OCI layout's `blobs/` alike.
A later implementation over a remote OCI registry (a shared content store) fits the same
interface: `has` a HEAD, `open` a verified GET, `put` an upload.

Contract (every implementation):
- `open` never returns a body whose bytes do not hash to its name: a damaged body raises
  CorruptEntry (naming where it lies and what it hashes to), a missing one BlobNotFound (a
  CorruptEntry too, so a caller that refetches either way needs one except clause). This is
  how the cache has always treated a blob an index record points at.
- `has` is the cheap question "is a body stored under this name?"; it does not hash, so a
  damaged body still counts as present until `open` finds it out. Callers that must know
  the content is good `open` it.
- `put` hashes what it stores; a `digest` given by the caller that does not match is refused
  with DigestMismatch (naming both digests) and nothing is stored.
- Faults of the store itself (a directory that cannot be created or written, a body that
  cannot be read or replaced) are CacheError naming the path.

Local concurrency: `put` writes a temp file in the blob directory, fsyncs it and
`os.replace`s it onto the final name (builder/util/atomic.py). Two writers of the same
digest, threads or processes, both succeed: each renames its own whole copy, the last one
wins, and a reader sees one whole body (or none) at every moment. A stored body is only ever
replaced by a verified copy of the same bytes, never truncated or rewritten in place, so a
reader holding it open keeps identical bytes; `open` hashes through the very file object it
returns (then rewinds it), so what it returns is what it verified.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import BinaryIO, Protocol, TypeAlias, runtime_checkable

from builder.errors import CacheError, FormatError, VerificationError
from builder.util.atomic import AtomicFile

ALGORITHM = "sha256"
CHUNK = 1 << 20  # bytes read per call when putting a stream

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")

Source: TypeAlias = bytes | bytearray | memoryview | os.PathLike[str] | BinaryIO
"""What `put` stores: the bytes themselves, a path to a file holding them (read, not moved),
or a binary stream read to its end."""


def parse_digest(digest: str) -> str:
    """The hex of a `sha256:<64 lowercase hex digits>` digest; FormatError for anything else
    (other algorithms are not supported, and the hex becomes a file name: no traversal)."""
    m = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
    if m is None:
        raise FormatError(f"malformed digest {digest!r}: expected sha256:<64 hex digits>")
    return m.group(1)


def digest_of(data: bytes | bytearray | memoryview) -> str:
    """`sha256:<hex>` of `data`."""
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


class CorruptEntry(Exception):
    """A cache or store entry failed its check; `path` names it. Callers refetch or report."""

    def __init__(self, path: Path | str, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why

    def __reduce__(self) -> tuple[type[CorruptEntry], tuple[Path | str, str]]:
        return (type(self), (self.path, self.why))


class BlobNotFound(CorruptEntry):
    """No body is stored under the digest (`why` is "missing")."""

    def __init__(self, path: Path | str, why: str = "missing") -> None:
        super().__init__(path, why)


class DigestMismatch(VerificationError):
    """`put` was told a digest the content does not hash to; nothing was stored."""

    def __init__(self, where: str, expected: str, actual: str) -> None:
        super().__init__(f"{where}: content hashes to {actual}, not the expected {expected}; "
                         "not stored")
        self.where = where
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[type[DigestMismatch], tuple[str, str, str]]:
        return (DigestMismatch, (self.where, self.expected, self.actual))


@runtime_checkable
class ContentStore(Protocol):
    """Bodies addressed by digest (`sha256:<hex>`); see the module docstring for the
    contract every implementation keeps."""

    def has(self, digest: str) -> bool:
        """Whether a body is stored under `digest` (not verified: `open` verifies)."""
        ...

    def open(self, digest: str) -> BinaryIO:
        """The body stored under `digest`, verified to hash to it, positioned at its start
        (the caller closes it). BlobNotFound when absent, CorruptEntry when damaged."""
        ...

    def put(self, data: Source, digest: str | None = None) -> str:
        """Store `data` atomically and return its digest. With `digest`, content that does
        not hash to it raises DigestMismatch and nothing is stored."""
        ...


class LocalContentStore:
    """A ContentStore over the directory `root`: bodies at `<root>/sha256/<hex>`.

    The directory is created on the first `put`. Every call is safe from any number of
    threads and processes at once (module docstring)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def blob_dir(self) -> Path:
        """`<root>/sha256`: where the bodies, and the temp files of puts under way, live."""
        return self.root / ALGORITHM

    def path(self, digest: str) -> Path:
        """Where the body of `digest` lives or would live. LOCAL-ONLY: for zero-copy use of
        a stored body (hardlinking it into an OCI layout, mapping it); not part of
        ContentStore. The file at that path is not verified here — `open` verifies; a caller
        that uses the path directly takes on that check (or the trust that replaces it)."""
        return self.blob_dir / parse_digest(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def open(self, digest: str) -> BinaryIO:
        expected = parse_digest(digest)
        path = self.blob_dir / expected
        try:
            f = open(path, "rb")  # returned to the caller, who closes it
        except FileNotFoundError:
            raise BlobNotFound(path) from None
        except OSError as exc:
            raise CacheError(path, f"cannot read: {exc.strerror or exc}") from None
        try:
            actual = hashlib.file_digest(f, ALGORITHM).hexdigest()
            if actual != expected:
                raise CorruptEntry(path, f"content hashes to {ALGORITHM}:{actual}")
            f.seek(0)
        except OSError as exc:
            f.close()
            raise CacheError(path, f"cannot read: {exc.strerror or exc}") from None
        except BaseException:
            f.close()
            raise
        return f

    def read_bytes(self, digest: str) -> bytes:
        """The whole body of `digest`, verified (one read, for small bodies such as indexes);
        raises like `open`."""
        expected = parse_digest(digest)
        path = self.blob_dir / expected
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(path) from None
        except OSError as exc:
            raise CacheError(path, f"cannot read: {exc.strerror or exc}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise CorruptEntry(path, f"content hashes to {ALGORITHM}:{actual}")
        return data

    def put(self, data: Source, digest: str | None = None) -> str:
        """Store `data` (bytes, a path to a file, or a binary stream read to its end) under
        the digest it hashes to, and return that digest.

        Written to a temp file in the blob directory, fsync'd and renamed into place, so the
        body appears whole or not at all; a body already stored under that digest is
        replaced by this verified copy. With `digest`, content that hashes to anything else
        raises DigestMismatch and nothing is left behind. Errors reading `data` (its file or
        stream) propagate unchanged, after the temp file is removed; errors writing the store
        are CacheError naming the path."""
        expected = parse_digest(digest) if digest is not None else None
        if isinstance(data, bytes | bytearray | memoryview):
            actual = hashlib.sha256(data).hexdigest()
            self._check(expected, actual)  # before anything is written
            with self._temp() as tmp:
                self._write(tmp, data)
                self._commit(tmp, actual)
            return f"{ALGORITHM}:{actual}"
        if isinstance(data, os.PathLike):
            with open(data, "rb") as f:
                return self._put_stream(f, expected)
        return self._put_stream(data, expected)

    # -- internals -----------------------------------------------------------------------

    def _put_stream(self, src: BinaryIO, expected: str | None) -> str:
        hasher = hashlib.sha256()
        with self._temp() as tmp:
            while chunk := src.read(CHUNK):
                hasher.update(chunk)
                self._write(tmp, chunk)
            actual = hasher.hexdigest()
            self._check(expected, actual)  # leaving the block unfinished removes the temp
            self._commit(tmp, actual)
        return f"{ALGORITHM}:{actual}"

    def _check(self, expected: str | None, actual: str) -> None:
        if expected is not None and actual != expected:
            raise DigestMismatch(f"content store {self.root}", f"{ALGORITHM}:{expected}",
                                 f"{ALGORITHM}:{actual}")

    def _temp(self) -> AtomicFile:
        try:
            return AtomicFile(self.blob_dir)
        except OSError as exc:
            raise CacheError(self.blob_dir, f"cannot write: {exc.strerror or exc}") from None

    def _write(self, tmp: AtomicFile, data: bytes | bytearray | memoryview) -> None:
        try:
            tmp.file.write(data)
        except OSError as exc:
            raise CacheError(tmp.path.parent, f"cannot write: {exc.strerror or exc}") from None

    def _commit(self, tmp: AtomicFile, hex_digest: str) -> None:
        dest = self.blob_dir / hex_digest
        try:
            tmp.commit(dest)
        except OSError as exc:
            raise CacheError(dest, f"cannot store: {exc.strerror or exc}") from None
