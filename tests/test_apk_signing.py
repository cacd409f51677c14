"""Keyring, RSA signatures, signature members."""

from __future__ import annotations

import pytest

from builder.apk.signing import (
    Keyring,
    generate_key,
    parse_signature_member,
    sign,
    signature_member,
)
from builder.errors import FormatError
from tests.helpers import KEYS


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, bytes]:
    return generate_key(2048)


def test_keyring_from_dir_loads_every_fixture_key() -> None:
    ring = Keyring.from_dir(KEYS)
    assert len(ring.names()) == 10
    assert "melange.rsa.pub" in ring.names()
    # lookup also without the .rsa.pub suffix
    assert "melange" in ring and "melange.rsa.pub" in ring and "nope" not in ring


@pytest.mark.parametrize("digest", ["sha1", "sha256"])
def test_sign_and_verify(keypair: tuple[bytes, bytes], digest: str) -> None:
    private, public = keypair
    ring = Keyring()
    ring.add("test.rsa.pub", public)
    sig = sign(private, b"message", digest)
    assert ring.verify("test.rsa.pub", digest, b"message", sig)
    assert ring.verify("test", digest, b"message", sig)
    assert not ring.verify("test.rsa.pub", digest, b"messagE", sig)
    other = "sha256" if digest == "sha1" else "sha1"
    assert not ring.verify("test.rsa.pub", other, b"message", sig)
    assert not ring.verify("unknown.rsa.pub", digest, b"message", sig)
    assert sig == sign(private, b"message", digest)  # PKCS#1 v1.5 is deterministic


def test_signature_member_round_trip(keypair: tuple[bytes, bytes]) -> None:
    private, _ = keypair
    sig = sign(private, b"x")
    member = signature_member("test.rsa.pub", sig, "sha256")
    assert parse_signature_member(member) == [("sha256", "test.rsa.pub", sig)]
    member1 = signature_member("k.rsa.pub", sig, "sha1")
    assert parse_signature_member(member1) == [("sha1", "k.rsa.pub", sig)]
    assert member == signature_member("test.rsa.pub", sig, "sha256")


def test_bad_key_files_are_format_errors(tmp_path) -> None:
    bad = tmp_path / "bad.rsa.pub"
    bad.write_text("not a key\n")
    with pytest.raises(FormatError, match="bad.rsa.pub: not a PEM public key"):
        Keyring.from_paths([bad])
    with pytest.raises(FormatError, match="does not exist"):
        Keyring.from_dir(tmp_path / "missing")
    with pytest.raises(FormatError, match="private key"):
        sign(b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", b"m")
