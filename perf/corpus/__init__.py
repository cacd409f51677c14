"""Benchmark corpora: signed APK repositories plus an apko config that installs them.

Shared by the synthetic generator (`perf.corpus.synthetic`) and the Debian converter
(`perf.corpus.debian`): a seed-derived signing key (so the same seed gives byte-identical
signatures), a repository writer (packages + signed `APKINDEX.tar.gz`), and the config writer.

Layout of a corpus directory:

    DIR/<key-name>.rsa.pub      public key (the keyring of DIR/apko.yaml)
    DIR/<key-name>.rsa          private key (benchmark-only, derived from the seed)
    DIR/<arch>/*.apk            packages
    DIR/<arch>/APKINDEX.tar.gz  signed index
    DIR/apko.yaml               config installing the top-level packages
    DIR/corpus.json             what was generated: preset, seed, sizes, timings
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from builder.apk.index import index_record_from_apk, write_index
from builder.apk.model import Package
from builder.apk.package import read_apk
from builder.errors import ApkImageError

ARCH = "x86_64"
_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


class CorpusError(ApkImageError):
    """A corpus could not be generated or converted (names the package or file)."""


def _is_probable_prime(n: int, rng: random.Random, rounds: int = 40) -> bool:
    if n < 2:
        return False
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, rng: random.Random, e: int) -> int:
    while True:
        # Top two bits set so p*q has exactly 2*bits bits; odd.
        candidate = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if math.gcd(candidate - 1, e) == 1 and _is_probable_prime(candidate, rng):
            return candidate


def derive_rsa_key(seed: str, bits: int = 2048) -> bytes:
    """A deterministic RSA private key (PKCS#1 PEM) from `seed`.

    Benchmark corpora must be byte-identical for a given seed, signatures included, and
    PKCS#1 v1.5 signatures are deterministic once the key is. The key is derived with a
    non-cryptographic RNG: it signs throw-away test repositories and is not a secret."""
    rng = random.Random(f"rsa-key:{seed}:{bits}")
    e = 65537
    while True:
        p = _prime(bits // 2, rng, e)
        q = _prime(bits // 2, rng, e)
        if p != q:
            break
    if p < q:
        p, q = q, p
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p, q=q, d=d, dmp1=rsa.rsa_crt_dmp1(d, p), dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q), public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    key = numbers.private_key()
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def public_pem_of(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class PackageStats:
    name: str
    version: str
    files: int  # non-directory entries
    installed_bytes: int  # uncompressed regular-file bytes
    apk_bytes: int  # size of the .apk


@dataclass
class CorpusInfo:
    """What `corpus.json` records."""

    kind: str  # synthetic | debian
    preset: str
    seed: int | None
    generator_version: int
    arch: str
    key_name: str
    top_level: list[str]
    packages: list[PackageStats] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def totals(self) -> dict[str, float]:
        inst = sum(p.installed_bytes for p in self.packages)
        comp = sum(p.apk_bytes for p in self.packages)
        return {
            "packages": len(self.packages),
            "files": sum(p.files for p in self.packages),
            "installed_bytes": inst,
            "apk_bytes": comp,
            "ratio": round(comp / inst, 4) if inst else 0.0,
        }

    def to_json(self) -> str:
        doc = asdict(self)
        doc["totals"] = self.totals
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: Path) -> CorpusInfo:
        try:
            doc = json.loads(path.read_text())
            doc.pop("totals", None)
            doc["packages"] = [PackageStats(**p) for p in doc.get("packages", [])]
            return cls(**doc)
        except (OSError, ValueError, TypeError) as exc:
            raise CorpusError(f"{path}: unreadable corpus description: {exc}") from None


class RepoWriter:
    """Writes `.apk` files into `<out>/<arch>/` and, on `finish`, the signed index."""

    def __init__(self, out: Path, private_pem: bytes, key_name: str, arch: str = ARCH) -> None:
        self.out = out
        self.arch = arch
        self.arch_dir = out / arch
        self.arch_dir.mkdir(parents=True, exist_ok=True)
        self.private_pem = private_pem
        self.key_name = key_name
        self.records: list[Package] = []

    def add(self, apk: bytes, source: str = "") -> Package:
        """Store one package (named `<name>-<version>.apk` from its `.PKGINFO`); returns its
        index record."""
        parsed = read_apk(apk, source or "generated package")
        record = index_record_from_apk(parsed, len(apk))
        path = self.arch_dir / record.filename
        _atomic_write(path, apk)
        self.records.append(record)
        return record

    def finish(self, description: str) -> Path:
        index = write_index(self.records, self.private_pem, self.key_name, description)
        path = self.arch_dir / "APKINDEX.tar.gz"
        _atomic_write(path, index)
        return path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_keys(out: Path, private_pem: bytes, key_name: str) -> Path:
    """Write `<key_name>` (public) and the private key beside it; returns the public path."""
    out.mkdir(parents=True, exist_ok=True)
    pub = out / key_name
    _atomic_write(pub, public_pem_of(private_pem))
    priv = out / key_name.removesuffix(".pub")
    _atomic_write(priv, private_pem)
    os.chmod(priv, 0o600)
    return pub


def write_config(path: Path, repository: str, keyring: Path, packages: list[str],
                 arch: str = ARCH, extra: dict[str, Any] | None = None) -> Path:
    """An apko-style YAML config installing `packages` from `repository`."""
    doc: dict[str, Any] = {
        "contents": {
            "keyring": [str(keyring)],
            "repositories": [repository],
            "packages": list(packages),
        },
        "archs": [arch],
    }
    doc.update(extra or {})
    _atomic_write(path, yaml.safe_dump(doc, sort_keys=False, width=1 << 20).encode())
    return path
