"""Verification stamps (builder/repo/stamp.py): a hot fetch skips the datahash pass and a hot
expand the data-tar CRC-32 pass only while the file is the one that passed them; a corrupted
file — same size, bytes changed, mtime put back with os.utime — is still caught."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from builder.apk.layout import read_layout
from builder.errors import VerificationError
from builder.expand import cached as expand_cache
from builder.expand.cached import _package, _parse_control, expand_cached
from builder.repo import stamp
from builder.repo import verify as fetch
from builder.repo.cache import VERIFIED_APK, VERIFIED_DATA_TAR, Cache
from builder.repo.verify import verify_package_fast
from tests.helpers import GOLDEN, GOLDEN_REPO, fast_fetcher

# A package with a datahash and a data section of a few KiB.
APK = sorted((GOLDEN / "packages").glob("*/*.apk"), key=lambda p: p.stat().st_size)[-1]
SETTLE_NS = 50_000_000  # tests cannot wait two seconds per file


@pytest.fixture(autouse=True)
def short_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stamp, "SETTLE_NS", SETTLE_NS)


def _settle() -> None:
    time.sleep(2 * SETTLE_NS / 1e9)


def _corrupt_in_place(path: Path, offset: int) -> None:
    """Change one byte at `offset`; size and mtime (and atime) stay as they were."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    _settle()  # the damage is not recent: only the changed ctime can give it away


def _no_sha256(*_a: object, **_k: object) -> None:
    raise AssertionError("the datahash was computed again")


def _pkg(path: Path):  # noqa: ANN202 - the index record
    layout = read_layout(path)
    return _package(layout, _parse_control(layout)[0])


def test_fetch_stamp_skips_hash_until_the_package_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / APK.name
    shutil.copyfile(APK, path)
    pkg = _pkg(path)
    assert pkg.datahash
    cache = Cache(tmp_path / "cache")
    stamp_file = cache.package_dir_hex(read_layout(path).key) / VERIFIED_APK
    _settle()
    verify_package_fast(path, pkg, cache)  # full pass, stamps
    assert stamp_file.is_file()
    with monkeypatch.context() as m:
        m.setattr(fetch.hashlib, "sha256", _no_sha256)
        verify_package_fast(path, pkg, cache)  # stamped: no hash
    # Same size, one data byte changed, mtime restored: ctime moved, so the hash runs.
    _corrupt_in_place(path, path.stat().st_size - 100)
    with pytest.raises(VerificationError, match="datahash mismatch"):
        verify_package_fast(path, pkg, cache)
    # Put right again (new ctime): verified by hashing, not by the old stamp.
    shutil.copyfile(APK, path)
    _settle()
    hashed = []
    real_sha256 = fetch.hashlib.sha256

    def counting(*a: object) -> object:
        hashed.append(a)
        return real_sha256(*a)

    with monkeypatch.context() as m:
        m.setattr(fetch.hashlib, "sha256", counting)
        verify_package_fast(path, pkg, cache)
    assert hashed


def test_fetch_no_stamp_for_a_file_changed_just_now(tmp_path: Path) -> None:
    path = tmp_path / APK.name
    shutil.copyfile(APK, path)
    cache = Cache(tmp_path / "cache")
    verify_package_fast(path, _pkg(path), cache)  # ctime is fresh: racily clean
    assert not (cache.package_dir_hex(read_layout(path).key) / VERIFIED_APK).exists()


def test_stamp_needs_same_identity_and_facts(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    _settle()
    s = tmp_path / "cache" / "f.verified"
    st = f.stat()
    assert stamp.write_stamp(s, st, st, {"crc32": 1}, stamp.check_started())
    assert stamp.is_stamped(s, f.stat(), {"crc32": 1})
    assert not stamp.is_stamped(s, f.stat(), {"crc32": 2})
    os.chmod(f, 0o600)  # metadata change: ctime moves, the stamp no longer applies
    assert not stamp.is_stamped(s, f.stat(), {"crc32": 1})
    other = f.stat()
    assert not stamp.write_stamp(s, st, other, {"crc32": 1}, stamp.check_started())
    s.write_text("not json")
    assert not stamp.is_stamped(s, f.stat(), {"crc32": 1})


def test_expand_stamp_skips_crc_until_the_data_tar_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path / "cache")
    cold = expand_cached(APK, cache)
    assert not cold.from_cache
    stamp_file = cold.data_tar.parent / VERIFIED_DATA_TAR
    original = cold.data_tar.read_bytes()
    _settle()
    first = expand_cached(APK, cache)  # full CRC pass, stamps
    assert first.from_cache and stamp_file.is_file()

    def no_crc(*_a: object) -> int:
        raise AssertionError("the data tar was CRC-checked again")

    with monkeypatch.context() as m:
        m.setattr(expand_cache.isal_zlib, "crc32", no_crc)
        assert expand_cached(APK, cache).from_cache
    # Same size, a content byte changed, mtime restored: caught, rebuilt from the .apk.
    entry = next(e for e in cold.entries if e.type == "0" and e.size)
    _corrupt_in_place(cold.data_tar, entry.data_offset)
    rebuilt = expand_cached(APK, cache)
    assert not rebuilt.from_cache
    assert rebuilt.data_tar.read_bytes() == original


def test_hot_fetch_of_a_local_repository_uses_stamps_and_catches_damage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.apk.signing import Keyring
    from builder.repo.fetch_packages import fetch_fast
    from builder.repo.indexes import load_indexes
    from builder.repo.repository import Repository

    repo = tmp_path / "repo"
    shutil.copytree(GOLDEN_REPO, repo)
    _settle()
    keyring = Keyring.from_paths([GOLDEN / "melange.rsa.pub"])
    with fast_fetcher(tmp_path / "cache") as fetcher:
        pkgs = load_indexes([Repository(str(repo))], "x86_64", keyring, fetcher)
        cold = fetch_fast(pkgs, "x86_64", fetcher, None)  # hashes and stamps
        with monkeypatch.context() as m:
            m.setattr(fetch.hashlib, "sha256", _no_sha256)
            assert fetch_fast(pkgs, "x86_64", fetcher, None) == cold
        victim = cold["replayout"]
        _corrupt_in_place(victim, victim.stat().st_size - 50)
        with pytest.raises(VerificationError, match="replayout.*datahash mismatch"):
            fetch_fast(pkgs, "x86_64", fetcher, None)
