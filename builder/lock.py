"""apko's lockfile (`apko.lock.json`, format v1): every package of every arch pinned with the
byte range and checksum of each section of its `.apk`, so a build can install exactly those
bytes without an APKINDEX (`build --lockfile`).

Written as apko writes it: Go's `json.MarshalIndent(lock, "", "  ")` (with its HTML escaping)
plus a newline. `config.name` is the config path as given; `config.checksum` is
`sha256-<base64>` of the config file's bytes followed by those of each `include`, depth first.
Repositories are listed archs outer, repositories inner (`<repo>/<arch>`); packages per arch in
install order; ranges are inclusive (`bytes=START-END`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

from builder.errors import ConfigError, FormatError, VerificationError

if TYPE_CHECKING:
    from builder.apk.signing import Keyring
    from builder.config import ImageConfig

VERSION = "v1"


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def config_checksum(chain: list[bytes]) -> str:
    """`sha256-<base64>` over the config file's bytes and its includes', in that order."""
    h = hashlib.sha256()
    for data in chain:
        h.update(data)
    return "sha256-" + _b64(h.digest())


@dataclass(frozen=True)
class Sections:
    """The three parts of an `.apk` as the lock records them: (start, end inclusive, checksum)."""

    signature: tuple[int, int, str] | None
    control: tuple[int, int, str]
    data: tuple[int, int, str]

    @classmethod
    def of(cls, data: bytes, source: str) -> Sections:
        from builder.apk.package import read_apk

        apk = read_apk(data, source)
        sig = len(apk.signature) if apk.signature else 0
        ctl = len(apk.control)
        return cls(
            (0, sig - 1, "sha1-" + _b64(hashlib.sha1(apk.signature).digest()))
            if apk.signature else None,
            (sig, sig + ctl - 1, "sha1-" + _b64(hashlib.sha1(apk.control).digest())),
            (sig + ctl, len(data) - 1, "sha256-" + _b64(hashlib.sha256(apk.data).digest())))

    def to_json(self) -> dict[str, dict[str, str]]:
        def part(p: tuple[int, int, str] | None) -> dict[str, str]:
            return {"range": f"bytes={p[0]}-{p[1]}", "checksum": p[2]} if p else \
                {"range": "", "checksum": ""}

        return {"signature": part(self.signature), "control": part(self.control),
                "data": part(self.data)}


def strip_scheme(url: str) -> str:
    for scheme in ("https://", "http://"):
        if url.startswith(scheme):
            return url[len(scheme):]
    return url


def strip_tag(line: str) -> str:
    """`@tag url` -> `url` (every leading `@label `)."""
    while line.startswith("@") and " " in line:
        line = line.split(" ", 1)[1].lstrip()
    return line


def repo_entry(line: str, arch: str) -> dict[str, str]:
    uri = strip_tag(line).rstrip("/") + "/" + arch
    return {"name": strip_scheme(uri), "url": uri + "/APKINDEX.tar.gz", "architecture": arch}


def package_url(repo_line: str, arch: str, name: str, version: str) -> str:
    """apko's package URL: `<repo>/<arch>/<name>-<version>.apk`, the file name query-escaped."""
    uri = strip_tag(repo_line).rstrip("/") + "/" + arch
    return f"{uri}/{quote_plus(f'{name}-{version}.apk')}"


def package_entry(name: str, version: str, arch: str, repo_line: str, sections: Sections,
                  checksum: str) -> dict[str, Any]:
    return {"name": name, "url": package_url(repo_line, arch, name, version),
            "version": version, "architecture": arch, **sections.to_json(),
            "checksum": checksum}


def configured_repositories(cfg: ImageConfig) -> dict[str, str]:
    """Resolved repository URL/path -> the line as the config wrote it (what apko names)."""
    from builder.repo.repository import parse_repository

    return {parse_repository(line, "repositories", cfg.resolve_local).url: line
            for line in [*cfg.contents.repositories, *cfg.contents.build_repositories]}


def dumps(doc: dict[str, Any]) -> bytes:
    """As Go's MarshalIndent with two spaces, HTML-escaped, plus a newline."""
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return (text + "\n").encode()


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    arch: str
    url: str  # as locked: `<repo>/<arch>/<file>` (repo as the config wrote it)
    checksum: str  # Q1…
    sections: Sections


def _range(doc: dict, where: str, field: str) -> tuple[int, int, str] | None:
    part = doc.get(field)
    if not isinstance(part, dict):
        raise FormatError(f"{where}: {field}: missing")
    rng, chk = part.get("range", ""), part.get("checksum", "")
    if not rng and not chk and field == "signature":
        return None
    try:
        start, end = rng.removeprefix("bytes=").split("-")
        return int(start), int(end), str(chk)
    except (AttributeError, ValueError):
        raise FormatError(f"{where}: {field}.range: {rng!r} is not bytes=START-END") from None


def read_lock(path: Path) -> tuple[dict, list[LockedPackage]]:
    """The lock document and its packages; a FormatError names the file and field."""
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read lockfile: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise FormatError(f"{path}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise FormatError(f"{path}: version: want {VERSION!r}, got "
                          f"{doc.get('version') if isinstance(doc, dict) else None!r}")
    pkgs = []
    for i, p in enumerate(((doc.get("contents") or {}).get("packages")) or []):
        where = f"{path}: contents.packages[{i}]"
        try:
            name, version, arch, url, checksum = (str(p[k]) for k in (
                "name", "version", "architecture", "url", "checksum"))
        except (KeyError, TypeError):
            raise FormatError(f"{where}: needs name, version, architecture, url and checksum") \
                from None
        if not checksum:
            raise FormatError(f"{where} ({name}): empty checksum (regenerate the lockfile)")
        control = _range(p, where, "control")
        data = _range(p, where, "data")
        assert control is not None and data is not None
        pkgs.append(LockedPackage(name, version, arch, url, checksum,
                                  Sections(_range(p, where, "signature"), control, data)))
    return doc, pkgs


def _show(part: tuple[int, int, str] | None) -> str:
    return "absent" if part is None else f"bytes={part[0]}-{part[1]} {part[2]}"


def verify_locked_file(pkg: LockedPackage, path: Path, keyring: Keyring,
                       allow_untrusted: bool = False, memo_dir: Path | None = None) -> None:
    """A fetched `.apk` is the locked one and its signature verifies with the keyring (an
    unsigned one only with `allow_untrusted`). Reads only the file's head: the signature and
    control sections are hashed here; the data section's SHA-256 is the `.PKGINFO` datahash
    (pinned by the control section), which the fetch stage checked the data against.

    With `memo_dir` (in the cache), a signature that verified once is remembered by the
    SHA-256 of the signature and control bytes and the keyring's fingerprint — exactly what
    the check depends on — so later builds neither import `cryptography` nor verify again."""
    from builder.apk.layout import read_layout, read_pkginfo
    from builder.apk.package import check_signature
    from builder.apk.signing import parse_signature_tar
    from builder.deflate.gzipstream import inflate_member

    layout = read_layout(path)
    with open(path, "rb") as f:
        head = f.read(layout.control_end)
    sig, control = head[:layout.control_start], head[layout.control_start:]
    fields, _ = read_pkginfo(layout)
    datahash = (fields.get("datahash") or [""])[0]
    got = Sections(
        (0, len(sig) - 1, "sha1-" + _b64(hashlib.sha1(sig).digest())) if sig else None,
        (layout.control_start, layout.control_end - 1,
         "sha1-" + _b64(hashlib.sha1(control).digest())),
        (layout.control_end, layout.size - 1,
         "sha256-" + _b64(bytes.fromhex(datahash)) if datahash else ""))
    for field in ("signature", "control", "data"):
        want, have = getattr(pkg.sections, field), getattr(got, field)
        if want != have:
            raise VerificationError(
                f"{pkg.name} {pkg.version} ({pkg.arch}, {path}): {field} section is "
                f"{_show(have)}, the lockfile says {_show(want)}")
    memo = None
    if memo_dir is not None and sig:
        key = hashlib.sha256(head).hexdigest()
        memo = memo_dir / key[:2] / f"{key}-{keyring.fingerprint()[:32]}"
        try:  # the memo names the key that verified: damaged (not a keyring key), ignored
            if memo.read_bytes().removesuffix(b"\n").decode() in keyring:
                return
        except (OSError, UnicodeDecodeError):
            pass
    signatures = parse_signature_tar(inflate_member(sig, 0, str(path))[0], str(path)) \
        if sig else None
    if signatures or not allow_untrusted:
        signer = check_signature(signatures or [], control, str(path), keyring,
                                 f"{pkg.name} {pkg.version}")
        if memo is not None:
            from builder.util.atomic import write_bytes

            try:  # a memo lost or not written only costs verifying again
                write_bytes(memo, signer.encode() + b"\n", durable=False)
            except OSError:
                pass
