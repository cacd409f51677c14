"""Package repositories: where an APKINDEX and the `.apk` files of one repository live.

A repository line (apko config `repositories:`, `/etc/apk/repositories`) is one of

    /path/to/repo            a local directory (relative paths resolve against the cwd)
    file:///path/to/repo     the same, as a URL
    http://host/path         a remote repository
    https://host/path        ditto, over TLS
    @tag <any of the above>  a pinned repository: its packages are only eligible for
                             requests carrying `@tag` (the resolver enforces this)

As in apko, a trailing `/` is trimmed. The index lives at `<repo>/<arch>/APKINDEX.tar.gz`
and a package at `<repo>/<arch>/<name>-<version>.apk`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from builder.apk.model import Package
from builder.errors import ConfigError

INDEX_FILENAME = "APKINDEX.tar.gz"
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Repository:
    """One repository: `url` exactly as configured (minus a trailing `/`), `tag` without `@`."""

    url: str
    tag: str = ""

    @property
    def scheme(self) -> str:
        """`http`, `https`, `file` or `` for a plain local path."""
        if "://" not in self.url:
            return ""
        return urlsplit(self.url).scheme.lower()

    @property
    def is_remote(self) -> bool:
        return self.scheme in ("http", "https")

    @property
    def local_path(self) -> Path:
        """The directory of a local (`file://` or plain path) repository."""
        if self.is_remote:
            raise ValueError(f"repository {self.url} is not local")
        if self.scheme == "file":
            parts = urlsplit(self.url)
            if parts.netloc not in ("", "localhost"):
                raise ConfigError(f"repository {self.url}: file:// URL with a host is not local")
            return Path(unquote(parts.path))
        return Path(self.url)

    def index_url(self, arch: str) -> str:
        """`<repo>/<arch>/APKINDEX.tar.gz` (a path string for plain local repositories)."""
        return self._join(arch, INDEX_FILENAME)

    def package_url(self, pkg: Package, arch: str) -> str:
        """`<repo>/<arch>/<name>-<version>.apk`."""
        return self._join(arch, pkg.filename)

    def _join(self, arch: str, filename: str) -> str:
        if self.is_remote:
            return f"{self.url}/{quote(arch)}/{quote(filename)}"
        return f"{self.url}/{arch}/{filename}"

    def __str__(self) -> str:
        return f"@{self.tag} {self.url}" if self.tag else self.url


def parse_repository(text: str, source: str = "repositories",
                     locate: Callable[[str], str] | None = None) -> Repository:
    """Parse one repository line: `[@tag ]url-or-path`. `source` names the origin in errors;
    `locate`, when given, maps the URL or path as written to the one to use (a config's
    relative paths resolved against its base directory)."""
    line = text.strip()
    if not line:
        raise ConfigError(f"{source}: empty repository")
    tag = ""
    if line.startswith("@"):
        head, _, rest = line.partition(" ")
        tag = head[1:]
        line = rest.strip()
        if not _TAG_RE.match(tag):
            raise ConfigError(f"{source}: invalid repository tag {head!r} in {text.strip()!r}")
        if not line:
            raise ConfigError(f"{source}: repository tag @{tag} without a URL")
    if any(c.isspace() for c in line):
        raise ConfigError(f"{source}: repository {line!r} contains whitespace")
    if locate is not None:
        line = locate(line)
    if "://" in line:
        scheme = urlsplit(line).scheme.lower()
        if scheme not in ("http", "https", "file"):
            raise ConfigError(
                f"{source}: unsupported repository scheme {scheme!r} in {line!r} "
                "(use a path, file://, http:// or https://)"
            )
        if scheme in ("http", "https") and not urlsplit(line).netloc:
            raise ConfigError(f"{source}: repository URL {line!r} has no host")
    trimmed = line.rstrip("/")
    if not trimmed:  # the root directory itself
        trimmed = "/"
    return Repository(url=trimmed, tag=tag)


def parse_repositories(lines: list[str], source: str = "repositories") -> list[Repository]:
    """Parse several repository lines, skipping blanks and `#` comments, dropping duplicates."""
    seen: set[Repository] = set()
    out: list[Repository] = []
    for i, text in enumerate(lines, 1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        repo = parse_repository(text, f"{source}[{i}]")
        if repo not in seen:
            seen.add(repo)
            out.append(repo)
    return out
