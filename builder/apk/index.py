"""`APKINDEX.tar.gz`: a signature gzip member, then one member holding a tar with
`DESCRIPTION` and `APKINDEX`. The signatures cover all bytes after the first member."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field

from builder.apk.model import Package, format_index_record, parse_index_text
from builder.apk.package import ApkFile, checksum
from builder.apk.pkginfo import pkginfo_to_package
from builder.apk.signing import (
    VERIFIABLE,
    Keyring,
    parse_signature_tar,
    sign,
    signature_member,
)
from builder.deflate.gzipstream import gzip_member, inflate_member, iter_inflate, member_end
from builder.errors import FormatError, VerificationError
from builder.gotar import END_MARKER, file_entry


@dataclass
class ApkIndex:
    packages: list[Package]
    description: str = ""
    signers: list[str] = field(default_factory=list)  # key names whose signature verified


def _index_tar_files(tar_bytes: bytes, source: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes + END_MARKER), mode="r:") as tf:
            for info in tf:
                if info.isfile():
                    f = tf.extractfile(info)
                    files[info.name.removeprefix("./")] = f.read() if f else b""
    except (tarfile.TarError, OverflowError) as exc:  # (Overflow: a size past any seek)
        raise FormatError(f"{source}: malformed index tar: {exc}") from None
    return files


def read_index(
    data: bytes,
    keyring: Keyring | None,
    source: str,
    allow_untrusted: bool = False,
) -> ApkIndex:
    """Parse and verify an `APKINDEX.tar.gz`.

    Any one valid signature by a key in `keyring` is enough (indexes may carry several).
    Unsigned or unverifiable indexes raise VerificationError unless `allow_untrusted`.
    """
    first, _ = inflate_member(data, 0, source, limit="index-size")  # (unsigned: the body)
    signatures = parse_signature_tar(first, source)
    if signatures is None:
        body_start = 0
        signatures = []
    else:
        body_start = member_end(data, 0, source)
    if body_start >= len(data):
        raise FormatError(f"{source}: index has a signature but no content")
    message = memoryview(data)[body_start:]
    signers: list[str] = []
    for digest_name, key_name, sig in signatures:
        if digest_name not in VERIFIABLE or keyring is None:
            continue
        if keyring.verify(key_name, digest_name, message, sig):
            signers.append(key_name)
    if not signers and not allow_untrusted:
        if not signatures:
            raise VerificationError(f"{source}: index is not signed")
        names = ", ".join(k for _, k, _ in signatures)
        if keyring is None or not any(k in keyring for _, k, _ in signatures):
            raise VerificationError(
                f"{source}: index signature: no trusted key (signed by {names})"
            )
        raise VerificationError(
            f"{source}: index signature mismatch: the signature by {names} does not verify "
            "with the trusted key of that name"
        )
    tar_bytes = b"".join(iter_inflate(message, source, limit="index-size",
                                      what="inflated index"))
    files = _index_tar_files(tar_bytes, source)
    if "APKINDEX" not in files:
        raise FormatError(f"{source}: no APKINDEX entry in index tar")
    try:
        text = files["APKINDEX"].decode()
    except UnicodeDecodeError as exc:
        raise FormatError(f"{source}: APKINDEX is not UTF-8: {exc}") from None
    packages = parse_index_text(text, f"{source}:APKINDEX")
    description = files.get("DESCRIPTION", b"").decode(errors="replace")
    return ApkIndex(packages, description, signers)


def format_index(packages: list[Package]) -> str:
    """APKINDEX text: records in the given order, each followed by a blank line."""
    return "".join(format_index_record(p) + "\n" for p in packages)


def write_index(
    packages: list[Package],
    private_pem: bytes | None,
    key_name: str,
    description: str = "",
    level: int = 9,
) -> bytes:
    """A signed `APKINDEX.tar.gz` (RSA/SHA-256). Unsigned when `private_pem` is None.
    Packages are written sorted by name then version, so the order of input does not matter."""
    ordered = sorted(packages, key=lambda p: (p.name, p.version, p.arch))
    text = format_index(ordered).encode()
    desc = description.encode()
    tar = (
        file_entry("DESCRIPTION", desc)
        + file_entry("APKINDEX", text)
        + END_MARKER
    )
    body = gzip_member(tar, level=level)
    if private_pem is None:
        return body
    return signature_member(key_name, sign(private_pem, body, "sha256"), "sha256") + body


def index_record_from_apk(apk: ApkFile, size: int | None = None) -> Package:
    """The index record of a package: its `.PKGINFO` plus C: (control checksum) and S:."""
    pkg = pkginfo_to_package(apk.pkginfo)
    pkg.checksum = checksum(apk.control)
    pkg.size = apk.size if size is None else size
    return pkg
