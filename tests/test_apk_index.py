"""APKINDEX read (real signed indexes) and write round trips."""

from __future__ import annotations

import re

import pytest

from builder.apk.index import index_record_from_apk, read_index, write_index
from builder.apk.model import Package, format_index_record
from builder.apk.package import read_apk
from builder.apk.signing import Keyring, generate_key, sign, signatures_member
from builder.deflate.gzipstream import gzip_member, split_members
from builder.errors import VerificationError
from tests.helpers import FIXTURES, GOLDEN, KEYS


def _index_rows() -> list[tuple[str, str]]:
    rows = []
    for line in (FIXTURES / "MANIFEST.tsv").read_text().splitlines():
        if line.startswith("indexes/"):
            path, _, _, check, _ = line.split("\t")
            rows.append((path, re.search(r"VERIFIED by (\S+)", check).group(1)))
    return rows


COUNTS = {
    "alpine-v3.16-main-x86_64": 4929,
    "alpine-v3.17-main-aarch64": 5004,
    "chainguard-excerpt-16-aarch64-3sigs": 16,
    "melange-local-4-x86_64-rsa256": 4,
    "wolfi-excerpt-47-x86_64": 47,
}
CHAINGUARD = FIXTURES / "indexes/chainguard-excerpt-16-aarch64-3sigs.APKINDEX.tar.gz"


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, bytes]:
    return generate_key(2048)


@pytest.mark.parametrize("path, key", _index_rows())
def test_real_indexes_verify_with_their_key(path: str, key: str) -> None:
    index = read_index((FIXTURES / path).read_bytes(), Keyring.from_paths([KEYS / key]), path)
    assert key in index.signers
    assert len(index.packages) == COUNTS[path.split("/")[1].removesuffix(".APKINDEX.tar.gz")]
    assert all(p.name and p.version and p.checksum.startswith("Q1") for p in index.packages)


def test_golden_index_verifies() -> None:
    path = GOLDEN / "packages/x86_64/APKINDEX.tar.gz"
    index = read_index(path.read_bytes(), Keyring.from_paths([GOLDEN / "melange.rsa.pub"]), "g")
    names = sorted(p.name for p in index.packages)
    assert names == ["custom-ca-certs-1", "custom-ca-certs-2", "pretend-baselayout", "replayout"]


def test_three_signatures_one_key_is_enough() -> None:
    key = "chainguard-61cb6bccd1f584b007db7be51ebce2b0530a54cc5a94e7650b570d113d537cf3.rsa.pub"
    index = read_index(CHAINGUARD.read_bytes(), Keyring.from_paths([KEYS / key]), "cg")
    assert index.signers == [key]


def test_untrusted_index_is_rejected_unless_allowed() -> None:
    data = CHAINGUARD.read_bytes()
    ring = Keyring.from_paths([KEYS / "melange.rsa.pub"])
    with pytest.raises(VerificationError, match="cg: index signature: no trusted key"):
        read_index(data, ring, "cg")
    with pytest.raises(VerificationError, match="no trusted key"):
        read_index(data, None, "cg")
    index = read_index(data, ring, "cg", allow_untrusted=True)
    assert index.signers == [] and len(index.packages) == 16


def test_tampered_index_is_a_signature_mismatch() -> None:
    path = FIXTURES / "indexes/wolfi-excerpt-47-x86_64.APKINDEX.tar.gz"
    data = path.read_bytes()
    (_, end), _ = split_members(data, "w")
    tampered = data[:end] + gzip_member(b"\0" * 1024)
    with pytest.raises(VerificationError, match="w: index signature mismatch"):
        read_index(tampered, Keyring.from_dir(KEYS), "w")


def test_write_read_round_trip(keypair: tuple[bytes, bytes]) -> None:
    private, public = keypair
    pkgs = [
        Package(
            name="zlib",
            version="1.3-r0",
            arch="x86_64",
            checksum="Q1abcdefghijklmnopqrstuvwxyz0=",
            size=1234,
            installed_size=4567,
            description="compression",
            url="https://zlib.net",
            license="Zlib",
            origin="zlib",
            build_time=1700000000,
            depends=["so:libc.so.6"],
            provides=["so:libz.so.1=1.3"],
            provider_priority=10,
        ),
        Package(name="abc", version="2-r1", arch="x86_64", checksum="Q1x=", size=1),
    ]
    raw = write_index(pkgs, private, "test.rsa.pub", description="my repo")
    assert raw == write_index(list(reversed(pkgs)), private, "test.rsa.pub", "my repo")
    ring = Keyring()
    ring.add("test.rsa.pub", public)
    index = read_index(raw, ring, "mine")
    assert index.signers == ["test.rsa.pub"]
    assert index.description == "my repo"
    assert index.packages == sorted(pkgs, key=lambda p: p.name)


def test_unsigned_index(keypair: tuple[bytes, bytes]) -> None:
    raw = write_index([Package(name="a", version="1")], None, "")
    with pytest.raises(VerificationError, match="u: index is not signed"):
        read_index(raw, Keyring(), "u")
    assert read_index(raw, None, "u", allow_untrusted=True).packages[0].name == "a"


def test_several_signatures_written_any_one_verifies(keypair: tuple[bytes, bytes]) -> None:
    private, public = keypair
    other_private, _ = generate_key(2048)
    body = write_index([Package(name="a", version="1")], None, "")
    sigs = signatures_member(
        [
            ("sha256", "other.rsa.pub", sign(other_private, body)),
            ("sha1", "mine.rsa.pub", sign(private, body, "sha1")),
        ]
    )
    ring = Keyring()
    ring.add("mine.rsa.pub", public)
    assert read_index(sigs + body, ring, "multi").signers == ["mine.rsa.pub"]


def test_index_record_from_apk_matches_real_index() -> None:
    index = read_index(
        (GOLDEN / "packages/x86_64/APKINDEX.tar.gz").read_bytes(), None, "g", allow_untrusted=True
    )
    for entry in index.packages:
        path = GOLDEN / "packages/x86_64" / entry.filename
        data = path.read_bytes()
        record = index_record_from_apk(read_apk(data, str(path)), len(data))
        # replaces/datahash come along from .PKGINFO but are not index fields
        assert format_index_record(record) == format_index_record(entry)
        assert record.checksum == entry.checksum and record.size == entry.size
