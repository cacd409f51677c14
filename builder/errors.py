"""Error types. Every user-facing failure is an ApkImageError whose message is one clear line
naming the file, package or field at fault; the CLI prints it and exits non-zero."""


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
    """A repository, index or package could not be fetched (or --offline forbade it)."""


class RegistryError(ApkImageError):
    """A registry refused or failed a request."""
