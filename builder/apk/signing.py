"""RSA signatures of packages and indexes, and the keyring that checks them.

A signature lives in its own gzip member: a truncated tar (no end marker) with one entry per
signature, named `.SIGN.RSA.<keyfile>` (PKCS#1 v1.5 over SHA-1) or `.SIGN.RSA256.<keyfile>`
(SHA-256), whose content is the raw signature. `<keyfile>` is the public key's file name
(e.g. `melange.rsa.pub`), which is how the verifier finds the key.

`cryptography` (~15 ms to import) is loaded by the functions that sign or verify, and keys
are parsed when first used: a hot build whose index was verified before (builder/repo/
indexes.py) never loads it.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from builder.deflate.gzipstream import gzip_member, inflate_member
from builder.errors import FormatError
from builder.gotar import END_MARKER, file_entry

if TYPE_CHECKING:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa

KEY_SUFFIX = ".rsa.pub"
# .SIGN.<algorithm>.<keyfile> -> digest name. DSA and RSA512 are recognised (so they can be
# reported) but not verified.
SIGN_ALGORITHMS = {"RSA": "sha1", "RSA256": "sha256", "RSA512": "sha512", "DSA": "dsa"}
VERIFIABLE = {"sha1", "sha256"}
_PREFIX_FOR_DIGEST = {"sha1": "RSA", "sha256": "RSA256", "sha512": "RSA512"}


def _hash(digest_name: str) -> hashes.HashAlgorithm:
    from cryptography.hazmat.primitives import hashes

    digests: dict[str, Callable[[], hashes.HashAlgorithm]] = {
        "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha512": hashes.SHA512}
    try:
        return digests[digest_name]()
    except KeyError:
        raise ValueError(f"unsupported signature digest {digest_name!r}") from None


class Keyring:
    """Trusted RSA public keys, by file name (e.g. `melange.rsa.pub`)."""

    def __init__(self) -> None:
        self._pems: dict[str, tuple[bytes, str]] = {}  # name -> (PEM, where it came from)
        self._parsed: dict[str, rsa.RSAPublicKey] = {}

    @staticmethod
    def load_public_key(pem: bytes, source: str) -> rsa.RSAPublicKey:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise FormatError(f"{source}: not a PEM public key: {exc}") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise FormatError(f"{source}: not an RSA public key")
        return key

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> Keyring:
        ring = cls()
        for path in paths:
            p = Path(path)
            try:
                pem = p.read_bytes()
            except OSError as exc:
                raise FormatError(f"{p}: cannot read key: {exc.strerror}") from None
            ring.add(p.name, pem, str(p))
        return ring

    @classmethod
    def from_dir(cls, path: str | Path) -> Keyring:
        """All `*.pub` files of a directory (like /etc/apk/keys)."""
        d = Path(path)
        if not d.is_dir():
            raise FormatError(f"{d}: keyring directory does not exist")
        return cls.from_paths(sorted(p for p in d.iterdir() if p.name.endswith(".pub")))

    def add(self, name: str, pem: bytes, source: str | None = None) -> None:
        """Trust `pem` under `name`; it is parsed (FormatError naming `source` if it is not an
        RSA public key) when first used."""
        if b"-----BEGIN" not in pem:
            raise FormatError(f"{source or name}: not a PEM public key")
        self._pems[name] = (bytes(pem), source or name)
        self._parsed.pop(name, None)

    def merge(self, other: Keyring) -> None:
        for name, (pem, source) in other._pems.items():
            self.add(name, pem, source)

    def names(self) -> list[str]:
        return sorted(self._pems)

    def __len__(self) -> int:
        return len(self._pems)

    def fingerprint(self) -> str:
        """Hex SHA-256 over the trusted keys (names and PEM bytes): what a record of "verified
        with this keyring" must match."""
        h = hashlib.sha256()
        for name in sorted(self._pems):
            pem = self._pems[name][0]
            h.update(f"{name}\0{len(pem)}\0".encode())
            h.update(pem)
        return h.hexdigest()

    def _name_of(self, key_name: str) -> str | None:
        """The trusted name `key_name` refers to, also matching with or without the
        `.rsa.pub` suffix."""
        for candidate in (key_name, key_name + KEY_SUFFIX,
                          key_name[: -len(KEY_SUFFIX)] if key_name.endswith(KEY_SUFFIX)
                          else None):
            if candidate is not None and candidate in self._pems:
                return candidate
        return None

    def get(self, key_name: str) -> rsa.RSAPublicKey | None:
        """The key called `key_name` (parsed on first use), or None."""
        name = self._name_of(key_name)
        if name is None:
            return None
        if name not in self._parsed:
            pem, source = self._pems[name]
            self._parsed[name] = self.load_public_key(pem, source)
        return self._parsed[name]

    def __contains__(self, key_name: str) -> bool:
        return self._name_of(key_name) is not None

    def verify(self, key_name: str, digest_name: str, message: bytes | memoryview,
               signature: bytes) -> bool:
        """True when `signature` is a valid PKCS#1 v1.5 signature of `message` by `key_name`.
        False for an unknown key or a bad signature."""
        key = self.get(key_name)
        if key is None or digest_name not in VERIFIABLE:
            return False
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            # cryptography annotates `data` as bytes; its Rust verify takes any buffer (an
            # index body comes as a memoryview, not copied)
            key.verify(signature, message,  # type: ignore[arg-type]
                       padding.PKCS1v15(), _hash(digest_name))
        except InvalidSignature:
            return False
        return True


def generate_key(bits: int = 2048) -> tuple[bytes, bytes]:
    """A new RSA key pair: (private PEM in traditional PKCS#1 form, public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def load_private_key(private_pem: bytes, source: str = "signing key") -> rsa.RSAPrivateKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise FormatError(f"{source}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise FormatError(f"{source}: not an RSA private key")
    return key


def public_pem(private_pem: bytes) -> bytes:
    """The public key (SubjectPublicKeyInfo PEM) of a private key."""
    from cryptography.hazmat.primitives import serialization

    return (
        load_private_key(private_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def sign(private_pem: bytes, message: bytes, digest_name: str = "sha256") -> bytes:
    """PKCS#1 v1.5 signature of `message` (deterministic for a given key and message)."""
    from cryptography.hazmat.primitives.asymmetric import padding

    key = load_private_key(private_pem)
    return key.sign(message, padding.PKCS1v15(), _hash(digest_name))


def signature_entry_name(key_name: str, digest_name: str) -> str:
    try:
        return f".SIGN.{_PREFIX_FOR_DIGEST[digest_name]}.{key_name}"
    except KeyError:
        raise ValueError(f"unsupported signature digest {digest_name!r}") from None


def signature_member(key_name: str, signature: bytes, digest_name: str = "sha256") -> bytes:
    """The gzip member carrying one signature: a truncated tar with `.SIGN.RSA*.<key_name>`."""
    return signatures_member([(digest_name, key_name, signature)])


def signatures_member(entries: list[tuple[str, str, bytes]]) -> bytes:
    """Like `signature_member` for several (digest_name, key_name, signature) entries."""
    tar = b"".join(
        file_entry(signature_entry_name(key, digest), sig, uname="root", gname="root")
        for digest, key, sig in entries
    )
    return gzip_member(tar, level=9)


def parse_signature_tar(tar_bytes: bytes, source: str) -> list[tuple[str, str, bytes]] | None:
    """(digest_name, key_name, signature) for each `.SIGN.*` entry of an uncompressed tar, or
    None when the tar's first entry is not a signature (so the member is not a signature)."""
    entries: list[tuple[str, str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes + END_MARKER), mode="r:") as tf:
            for info in tf:
                if not info.name.startswith(".SIGN."):
                    if not entries:
                        return None
                    raise FormatError(f"{source}: unexpected {info.name!r} in signature block")
                algo, _, key_name = info.name[len(".SIGN.") :].partition(".")
                if algo not in SIGN_ALGORITHMS or not key_name:
                    raise FormatError(f"{source}: unknown signature entry {info.name!r}")
                f = tf.extractfile(info)
                entries.append((SIGN_ALGORITHMS[algo], key_name, f.read() if f else b""))
    except (tarfile.TarError, OverflowError) as exc:  # (Overflow: a size past any seek)
        raise FormatError(f"{source}: malformed signature tar: {exc}") from None
    return entries or None


def parse_signature_member(raw: bytes, source: str = "signature") -> list[tuple[str, str, bytes]]:
    """(digest_name, key_name, signature) entries of a signature gzip member (compressed)."""
    tar_bytes, _ = inflate_member(raw, 0, source)
    entries = parse_signature_tar(tar_bytes, source)
    if entries is None:
        raise FormatError(f"{source}: not a signature block (no .SIGN.* entry)")
    return entries
