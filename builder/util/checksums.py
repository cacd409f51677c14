"""The checksum spellings APK uses, converted in one place.

- `C:` in an index and a package's identity: `Q1` + base64 of the SHA-1 of its control member;
- `APK-TOOLS.checksum.SHA1` on data-tar entries: 40 hex digits, or the same `Q1` form.
"""

from __future__ import annotations

import base64
import binascii
from binascii import b2a_base64

from builder.errors import FormatError, VerificationError


def q1(digest: bytes) -> str:
    """`Q1` + base64 of a raw SHA-1 digest."""
    return "Q1" + b2a_base64(digest, newline=False).decode()


def parse_sha1(value: str) -> bytes | None:
    """A checksum value (40 hex digits, or `Q1` + base64) as 20 raw bytes; None when it is
    neither."""
    try:
        if value.startswith("Q1"):
            raw = base64.b64decode(value[2:], validate=True)
        else:
            raw = bytes.fromhex(value)
    except (ValueError, binascii.Error):
        return None
    return raw if len(raw) == 20 else None


def sha1_hex(value: str) -> str:
    """Lower-case hex form of a checksum value, for comparing two of them ("" for a `Q1`
    value that is not a SHA-1). Hex is taken as it is: on the install hot path, once per
    file, and a regular file's value has already been checked against its content."""
    if not value.startswith("Q1"):
        return value.lower()
    raw = parse_sha1(value)
    return raw.hex() if raw is not None else ""


def q1_checksum(checksum: str, who: str = "") -> str:
    """`Q1` form of an APK-TOOLS.checksum.SHA1 value (hex or already Q1)."""
    if checksum.startswith("Q1"):
        return checksum
    try:
        raw = bytes.fromhex(checksum)
    except ValueError:
        raise FormatError(f"{who}: checksum {checksum!r} is neither hex nor Q1") from None
    return q1(raw)


def checksum_hex(checksum: str, source: str = "") -> str:
    """The hex SHA-1 inside an index `C:` value, which must be the `Q1` form."""
    where = f"{source}: " if source else ""
    if not checksum.startswith("Q1"):
        raise VerificationError(f"{where}checksum {checksum!r} is not a Q1 (SHA-1) checksum")
    try:
        raw = base64.b64decode(checksum[2:], validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{where}checksum {checksum!r} is not valid base64") from None
    if len(raw) != 20:
        raise VerificationError(f"{where}checksum {checksum!r} is not a 20-byte SHA-1")
    return raw.hex()
