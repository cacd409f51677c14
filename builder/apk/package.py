"""Reading and verifying `.apk` files: [signature] + control + data gzip members.

The control section is one gzip member (a truncated tar: `.PKGINFO`, scripts); the data
section is everything after it and may be several gzip members (melange splits large data
tars into 1 MiB members). What is checked, and what each check proves:

- package signature (`.SIGN.RSA.` = SHA-1, `.SIGN.RSA256.` = SHA-256) over the compressed
  control member — the control section is the packager's;
- `C:` from a (signed) index = "Q1" + base64(SHA-1(control member)) — same, via the index;
- `datahash` in `.PKGINFO` = SHA-256 of the compressed data section — the data is intact;
- per-file `APK-TOOLS.checksum.SHA1` PAX records — each file's content matches its header.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from builder import limits
from builder.apk.layout import check_apk_size, read_control
from builder.apk.model import Package
from builder.apk.pkginfo import pkginfo_to_package
from builder.apk.signing import VERIFIABLE, Keyring, parse_signature_tar
from builder.deflate.gzipstream import InflateReader, inflate_member
from builder.errors import FormatError, VerificationError
from builder.util.checksums import parse_sha1, q1

CHECKSUM_PAX = "APK-TOOLS.checksum.SHA1"
READ_CHUNK = 1 << 20
TAR_BUFSIZE = 1 << 16  # tarfile re-slices its buffer per read: keep it small


@dataclass
class ApkFile:
    source: str
    signature: bytes | None  # the signature gzip member, as stored (None when unsigned)
    control: bytes  # the control gzip member, as stored
    data: bytes  # the data section (one or more gzip members), as stored
    data_offset: int
    size: int  # whole .apk size
    pkginfo: dict[str, list[str]]
    package: Package
    scripts: dict[str, bytes] = field(default_factory=dict)  # control entries but .PKGINFO
    script_modes: dict[str, int] = field(default_factory=dict)
    signatures: list[tuple[str, str, bytes]] = field(default_factory=list)  # (digest, key, sig)


@dataclass
class VerifyReport:
    package: str
    signer: str | None  # key name of the verified signature, None when not checked/unsigned
    files: int = 0  # non-directory entries whose data-tar headers were read
    checked_files: int = 0  # entries whose APK-TOOLS.checksum.SHA1 was verified
    datahash_checked: bool = False
    installed_bytes: int = 0


def checksum(control: bytes) -> str:
    """The `C:` identity: "Q1" + base64(SHA-1 of the control gzip member)."""
    return q1(hashlib.sha1(control).digest())


def read_apk(data: bytes, source: str) -> ApkFile:
    """Split an `.apk` into its sections and parse the control section. Only the signature
    and control members are inflated here; the data section is kept compressed."""
    check_apk_size(len(data), source)
    first, first_end = inflate_member(data, 0, source)
    sigs = parse_signature_tar(first, source)
    if sigs is None:
        signature = None
        control_start, control_tar, control_end = 0, first, first_end
        sigs = []
    else:
        signature = data[:first_end]
        control_start = first_end
        if control_start >= len(data):
            raise FormatError(f"{source}: signed package without control and data sections")
        control_tar, control_end = inflate_member(data, control_start, source)
    if control_end >= len(data):
        raise FormatError(f"{source}: no data section after the control section")
    fields, rest = read_control(control_tar, source)
    files = {ti.name.removeprefix("./"): body for ti, body in rest if ti.isfile()}
    modes = {ti.name.removeprefix("./"): ti.mode for ti, _ in rest if ti.isfile()}
    control = data[control_start:control_end]
    pkg = pkginfo_to_package(fields, f"{source}:.PKGINFO")
    pkg.checksum = checksum(control)
    pkg.size = len(data)
    return ApkFile(
        source=source,
        signature=signature,
        control=control,
        data=data[control_end:],
        data_offset=control_end,
        size=len(data),
        pkginfo=fields,
        package=pkg,
        scripts=files,
        script_modes=modes,
        signatures=sigs,
    )


def iter_data_tar(
    data_section: bytes, source: str = "data section"
) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    """Entries of the data tar (all gzip members inflated as one stream), with a reader for
    regular files' content that is valid until the next entry. Raises FormatError on bad
    gzip or tar data."""
    reader = InflateReader(data_section, source, limit="data-size",
                           what="inflated data section")
    try:
        # typeshed asks every fileobj for write/tell/seek/close; a "r|" stream only reads
        with tarfile.open(fileobj=reader, mode="r|",  # type: ignore[call-overload]
                          bufsize=TAR_BUFSIZE) as tf:
            for info in tf:
                yield info, (tf.extractfile(info) if info.isreg() else None)
    except tarfile.TarError as exc:
        raise FormatError(f"{source}: malformed data tar: {exc}") from None


def check_signature(signatures: list[tuple[str, str, bytes]], control: bytes, source: str,
                    keyring: Keyring | None, name: str) -> str:
    """The name of the trusted key whose signature of the control section verifies."""
    if not signatures:
        raise VerificationError(f"{name}: package is not signed ({source})")
    usable = [s for s in signatures if s[0] in VERIFIABLE]
    if keyring is None:
        raise VerificationError(f"{name}: no keyring to check the package signature")
    for digest_name, key_name, sig in usable:
        if keyring.verify(key_name, digest_name, control, sig):
            return key_name
    names = ", ".join(k for _, k, _ in signatures)
    if not any(k in keyring for _, k, _ in usable):
        raise VerificationError(f"{name}: package signature: no trusted key (signed by {names})")
    raise VerificationError(
        f"{name}: package signature mismatch: the signature by {names} does not verify "
        "with the trusted key of that name"
    )


def verify_apk(
    apk: ApkFile,
    keyring: Keyring | None,
    expected: Package | None = None,
    require_signature: bool = True,
) -> VerifyReport:
    """Check the signature, `C:`/size against `expected`, `datahash` and per-file SHA-1.
    Each failure raises a distinct VerificationError naming the package and the check.
    A present signature is always checked when a keyring is given."""
    name = str(apk.package)
    report = VerifyReport(package=name, signer=None)
    if require_signature:
        report.signer = check_signature(apk.signatures, apk.control, apk.source, keyring,
                                            name)
    elif apk.signatures and keyring is not None and len(keyring):
        report.signer = check_signature(apk.signatures, apk.control, apk.source, keyring,
                                            name)
    if expected is not None:
        if expected.checksum and expected.checksum != apk.package.checksum:
            raise VerificationError(
                f"{name}: control checksum mismatch: expected C:{expected.checksum}, "
                f"package has {apk.package.checksum}"
            )
        if expected.size and expected.size != apk.size:
            raise VerificationError(
                f"{name}: size mismatch: expected {expected.size} bytes, file has {apk.size}"
            )
    if apk.package.datahash:
        actual = hashlib.sha256(apk.data).hexdigest()
        if actual != apk.package.datahash.lower():
            raise VerificationError(
                f"{name}: datahash mismatch: .PKGINFO says {apk.package.datahash}, "
                f"data section hashes to {actual}"
            )
        report.datahash_checked = True
    _verify_files(apk, name, report)
    return report


def _verify_files(apk: ApkFile, name: str, report: VerifyReport) -> None:
    sums: dict[str, bytes] = {}
    max_entries = limits.current().entries
    count = 0
    try:
        for info, reader in iter_data_tar(apk.data, f"{name} ({apk.source}): data section"):
            count += 1
            if count > max_entries:
                limits.check(f"{name} ({apk.source}): data section", "number of tar entries",
                             "entries", count)
            if info.isdir():
                continue
            report.files += 1
            path = info.name.removeprefix("./")
            recorded = info.pax_headers.get(CHECKSUM_PAX)
            if info.isreg():
                h = hashlib.sha1()
                assert reader is not None
                while block := reader.read(READ_CHUNK):
                    h.update(block)
                actual = h.digest()
                sums[path] = actual
                report.installed_bytes += info.size
            elif info.issym():
                actual = hashlib.sha1(info.linkname.encode("utf-8", "surrogateescape")).digest()
            elif info.islnk():
                target = sums.get(info.linkname.removeprefix("./"))
                if target is None:
                    continue  # link to an unknown file: nothing to compare against
                actual = target
            else:
                continue
            if recorded is None:
                continue
            want = parse_sha1(recorded)
            if want is None:
                raise VerificationError(
                    f"{name}: file {path}: malformed {CHECKSUM_PAX} value {recorded!r}"
                )
            if want != actual:
                raise VerificationError(
                    f"{name}: file {path}: SHA-1 mismatch ({CHECKSUM_PAX} {want.hex()}, "
                    f"content {actual.hex()})"
                )
            report.checked_files += 1
    except limits.LimitError:
        raise
    except FormatError as exc:
        raise VerificationError(f"{name}: data section unreadable: {exc}") from None
