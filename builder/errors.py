"""Error types. Every user-facing failure is an ApkImageError whose message is one clear line
naming the file, package or field at fault; the CLI prints it and exits non-zero."""

from __future__ import annotations

import os


class ApkImageError(Exception):
    """Base class: a failure the user can act on (bad input, bad signature, network...)."""


class ConfigError(ApkImageError):
    """The image configuration is invalid (names file, line and key)."""


class FormatError(ApkImageError):
    """A package, index or tar is malformed."""


class VerificationError(ApkImageError):
    """A signature or checksum did not match (names the package and the check)."""


class ResolveError(ApkImageError):
    """The world cannot be satisfied (names the chain of requirements)."""


class FetchError(ApkImageError):
    """A repository, index or package could not be fetched (or --offline forbade it); faults
    of the cache itself are CacheError."""


class RegistryError(ApkImageError):
    """A registry refused or failed a request."""


class CacheError(ApkImageError):
    """The on-disk cache (or a local content store) cannot be used: a directory that cannot
    be created or written, a lock that cannot be taken, an entry that cannot be read or
    replaced. `path` names the file or directory at fault; the message is
    `cache <path>: <what failed>`. Network and repository faults are FetchError."""

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        super().__init__(f"cache {path}: {what}")
        self.path = path
        self.what = what

    def __reduce__(self) -> tuple[type[CacheError], tuple[str | os.PathLike[str], str]]:
        return (CacheError, (self.path, self.what))
