"""Reading and verifying real packages (fixtures per MANIFEST.tsv) and tampered ones."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest

from builder.apk.index import read_index
from builder.apk.package import checksum, iter_data_tar, read_apk, verify_apk
from builder.apk.signing import (
    Keyring,
    generate_key,
    parse_signature_member,
    signature_member,
)
from builder.apk.writer import DataEntry, build_apk, build_control
from builder.deflate.gzipstream import gzip_member, inflate_member, split_members
from builder.errors import ApkImageError, FormatError, VerificationError
from builder.gotar import END_MARKER, TYPE_SYMLINK, TarHeader, encode_header
from tests.helpers import FIXTURES, GOLDEN, KEYS


def _manifest() -> list[tuple[str, str | None, bool]]:
    """(path, key file or None when unsigned, expected to verify)."""
    rows = []
    for line in (FIXTURES / "MANIFEST.tsv").read_text().splitlines():
        if line.startswith("#") or not line.startswith("apk/"):
            continue
        path, _, _, check, _ = line.split("\t")
        if check == "UNSIGNED":
            rows.append((path, None, True))
            continue
        m = re.search(r"VERIFIED by (\S+)", check)
        signed_by = re.match(r"\.SIGN\.RSA(?:256)?\.(\S+)", check)
        assert signed_by, line
        rows.append((path, m.group(1) if m else signed_by.group(1), bool(m)))
    return rows


MANIFEST = _manifest()
STRACE = FIXTURES / "apk/alpine/strace-5.17-r0.apk"
REPLAYOUT = FIXTURES / "apk/melange-local/replayout-1.0.0-r0.apk"
TZDATA = FIXTURES / "apk/melange-local/tzdata-2023c-r0.multimember.x86_64.apk"


def _ring(*names: str) -> Keyring:
    return Keyring.from_paths([KEYS / n for n in names])


def test_manifest_lists_all_package_fixtures() -> None:
    assert len(MANIFEST) == 17
    assert sum(1 for _, key, ok in MANIFEST if not ok) == 2


@pytest.mark.parametrize("path, key, ok", [m for m in MANIFEST if m[2]], ids=lambda v: str(v))
def test_genuine_packages_verify_with_their_key(path: str, key: str | None, ok: bool) -> None:
    apk = read_apk((FIXTURES / path).read_bytes(), path)
    if key is None:
        with pytest.raises(VerificationError, match="not signed"):
            verify_apk(apk, Keyring.from_dir(KEYS))
        report = verify_apk(apk, None, require_signature=False)
        assert report.signer is None
    else:
        report = verify_apk(apk, _ring(key))
        assert report.signer == key
        # ...and not with any other key
        others = Keyring.from_paths(p for p in KEYS.iterdir() if p.name != key)
        with pytest.raises(VerificationError, match="no trusted key"):
            verify_apk(apk, others)
    assert report.datahash_checked
    assert report.files > 0 and report.checked_files == report.files


@pytest.mark.parametrize("apk_path", sorted((GOLDEN / "packages").glob("*/*.apk")), ids=str)
def test_golden_packages_verify_with_golden_key(apk_path: Path) -> None:
    ring = Keyring.from_paths([GOLDEN / "melange.rsa.pub"])
    report = verify_apk(read_apk(apk_path.read_bytes(), str(apk_path)), ring)
    assert report.signer == "melange.rsa.pub"


@pytest.mark.parametrize("path", [m[0] for m in MANIFEST if not m[2]])
def test_negative_packages_are_rejected(path: str) -> None:
    apk = read_apk((FIXTURES / path).read_bytes(), path)
    with pytest.raises(VerificationError, match=r"package signature (mismatch|: no trusted)"):
        verify_apk(apk, Keyring.from_dir(KEYS))


def test_strace_identity_matches_alpine_index() -> None:
    data = STRACE.read_bytes()
    apk = read_apk(data, str(STRACE))
    index = read_index(
        (FIXTURES / "indexes/alpine-v3.16-main-x86_64.APKINDEX.tar.gz").read_bytes(),
        _ring("alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"),
        "alpine-v3.16",
    )
    (entry,) = [p for p in index.packages if p.name == "strace"]
    assert apk.package.checksum == entry.checksum == "Q18y9jy9MgtvQFXTntDQ3if2axAkk="
    assert apk.size == entry.size == 521102
    assert apk.package.installed_size == entry.installed_size == 1708032
    assert apk.package.depends == entry.depends and apk.package.provides == entry.provides
    verify_apk(apk, _ring("alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"), entry)
    # identity mode: no package signature needed when C: matches a signed index
    verify_apk(apk, None, entry, require_signature=False)


def test_sections_and_scripts() -> None:
    data = (FIXTURES / "apk/alpine/alpine-baselayout-3.2.0-r23.aarch64.apk").read_bytes()
    apk = read_apk(data, "baselayout")
    ranges = split_members(data, "baselayout")
    assert apk.signature == data[: ranges[0][1]]
    assert apk.control == data[ranges[1][0] : ranges[1][1]]
    assert apk.data_offset == ranges[2][0] and apk.data == data[ranges[2][0] :]
    assert set(apk.scripts) == {".pre-install", ".pre-upgrade", ".post-upgrade", ".post-install"}
    assert all(mode == 0o755 for mode in apk.script_modes.values())
    assert apk.scripts[".pre-install"].startswith(b"#!")
    assert checksum(apk.control) == apk.package.checksum


def test_tzdata_multimember_data_is_read_fully() -> None:
    data = TZDATA.read_bytes()
    apk = read_apk(data, "tzdata")
    assert len(split_members(apk.data, "tzdata data")) == 4
    # reference: the gzip module inflates every member; tarfile lists everything
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(apk.data))) as tf:
        members = tf.getmembers()
    ours = [info.name for info, _ in iter_data_tar(apk.data)]
    assert ours == [m.name for m in members] and len(ours) > 1200
    report = verify_apk(apk, _ring("local-melange.rsa.pub"))
    assert report.checked_files == report.files == sum(1 for m in members if not m.isdir())
    assert report.installed_bytes == sum(m.size for m in members if m.isreg())


def _flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("section", ["signature", "control", "data"])
def test_flipped_byte_in_each_section_is_rejected(section: str) -> None:
    data = REPLAYOUT.read_bytes()
    (s0, e0), (s1, e1), (s2, e2) = split_members(data, "replayout")
    # a byte in the middle of the deflate payload of that section
    start, end = {"signature": (s0, e0), "control": (s1, e1), "data": (s2, e2)}[section]
    bad = _flip(data, (start + 10 + end - 8) // 2)
    with pytest.raises(ApkImageError):
        apk = read_apk(bad, "replayout")
        verify_apk(apk, _ring("melange.rsa.pub"))


def test_altered_signature_is_a_signature_mismatch() -> None:
    data = REPLAYOUT.read_bytes()
    apk = read_apk(data, "replayout")
    ((digest, key, sig),) = parse_signature_member(apk.signature)
    forged = signature_member(key, _flip(sig, 100), digest)
    apk2 = read_apk(forged + data[len(apk.signature) :], "replayout")
    with pytest.raises(VerificationError, match="replayout-1.0.0-r0: package signature mismatch"):
        verify_apk(apk2, _ring("melange.rsa.pub"))


def test_altered_control_is_caught_by_signature_and_by_checksum() -> None:
    data = REPLAYOUT.read_bytes()
    apk = read_apk(data, "replayout")
    tar, _ = inflate_member(apk.control, 0, "control")
    altered = gzip_member(tar.replace(b"license = MIT", b"license = XYZ"))
    bad = apk.signature + altered + apk.data
    bad_apk = read_apk(bad, "replayout")
    assert bad_apk.package.license == "XYZ"
    with pytest.raises(VerificationError, match="package signature mismatch"):
        verify_apk(bad_apk, _ring("melange.rsa.pub"))
    with pytest.raises(VerificationError, match="control checksum mismatch: expected C:Q1"):
        verify_apk(bad_apk, None, apk.package, require_signature=False)


def test_altered_data_is_a_datahash_mismatch() -> None:
    data = REPLAYOUT.read_bytes()
    apk = read_apk(data, "replayout")
    tar = gzip.decompress(apk.data)
    altered = gzip_member(tar.replace(b"replayout", b"REPLAYOUT", 1))
    bad = read_apk(apk.signature + apk.control + altered, "replayout")
    with pytest.raises(VerificationError, match="replayout-1.0.0-r0: datahash mismatch"):
        verify_apk(bad, _ring("melange.rsa.pub"))
    # truncated data: also a datahash mismatch (checked before inflating)
    cut = read_apk(apk.signature + apk.control + apk.data[:-20], "replayout")
    with pytest.raises(VerificationError, match="datahash mismatch"):
        verify_apk(cut, _ring("melange.rsa.pub"))


def test_size_mismatch_against_expected() -> None:
    apk = read_apk(STRACE.read_bytes(), "strace")
    expected = apk.package.__class__(**{**apk.package.__dict__, "size": 1})
    with pytest.raises(VerificationError, match="size mismatch: expected 1 bytes"):
        verify_apk(apk, None, expected, require_signature=False)


def test_per_file_sha1_mismatch_is_detected() -> None:
    private, public = generate_key()
    ring = Keyring()
    ring.add("t.rsa.pub", public)
    good = b"the real content\n"
    evil = b"the evil content\n"
    entries = [
        DataEntry("etc", "dir", 0o755),
        DataEntry("etc/a", data=b"fine"),
        # checksum of the real content, but evil bytes in the tar; datahash is computed over
        # the data actually written, so only the per-file check can catch it
        DataEntry("etc/motd", data=evil, sha1=hashlib.sha1(good).hexdigest(), size=len(evil)),
    ]
    raw = build_apk({"pkgname": ["t"], "pkgver": ["1-r0"]}, entries, private, "t.rsa.pub")
    apk = read_apk(raw, "t.apk")
    with pytest.raises(VerificationError, match=r"t-1-r0: file etc/motd: SHA-1 mismatch"):
        verify_apk(apk, ring)


def test_symlink_checksum_mismatch_is_detected() -> None:
    # a symlink whose checksum record is for another target ("/run" vs "/tmp")
    header = encode_header(TarHeader(
        "l",
        TYPE_SYMLINK,
        mode=0o777,
        linkname="/tmp",
        pax={"APK-TOOLS.checksum.SHA1": hashlib.sha1(b"/run").hexdigest()},
    ))
    data = gzip_member(header + END_MARKER)
    fields = {"pkgname": ["s"], "pkgver": ["1-r0"], "datahash": [hashlib.sha256(data).hexdigest()]}
    apk = read_apk(build_control(fields, {}, 0) + data, "s")
    with pytest.raises(VerificationError, match="s-1-r0: file l: SHA-1 mismatch"):
        verify_apk(apk, None, require_signature=False)


def test_not_an_apk() -> None:
    with pytest.raises(FormatError, match="x.apk: not a gzip member at byte 0"):
        read_apk(b"hello, this is not a package", "x.apk")
    with pytest.raises(FormatError, match="no data section"):
        read_apk(gzip_member(b"\0" * 512), "y.apk")
