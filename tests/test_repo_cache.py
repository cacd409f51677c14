"""The on-disk cache: layout, atomic writes, corruption detection, concurrent writers."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from builder.errors import CacheError, FetchError, VerificationError
from builder.expand.cached import _locked
from builder.repo.cache import Cache, CorruptEntry, IndexRecord, default_cache_dir
from builder.repo.store import BlobNotFound
from builder.util.checksums import checksum_hex

REPLAYOUT_C = "Q11/HhSewwwOXgl0r0ffb0O0BRtYc="  # golden x86_64 replayout C:


def test_checksum_hex() -> None:
    assert checksum_hex(REPLAYOUT_C) == "d7f1e149ec30c0e5e0974af47df6f43b4051b587"
    for bad in ("X1abc", "Q1!!!!", "Q1" + "AAAA"):
        with pytest.raises(VerificationError, match="checksum"):
            checksum_hex(bad, "pkg")


def test_default_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "apkimage"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "apkimage"


def test_package_layout(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    path = cache.package_path(REPLAYOUT_C)
    assert path == tmp_path / "v1/apk/d7/d7f1e149ec30c0e5e0974af47df6f43b4051b587/package.apk"


def test_atomic_write_and_abort(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    dest = tmp_path / "d" / "f"
    cache.write_bytes(dest, b"one")
    cache.write_bytes(dest, b"two")
    assert dest.read_bytes() == b"two"
    with cache.atomic(dest.parent) as tmp:
        tmp.file.write(b"partial")
        temp_path = tmp.path
        assert temp_path.exists()
    assert not temp_path.exists()  # left without commit: gone
    with pytest.raises(RuntimeError), cache.atomic(dest.parent) as tmp:
        tmp.file.write(b"x")
        raise RuntimeError("boom")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f"]
    assert dest.read_bytes() == b"two"


def test_blob_corruption_detected(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    data = b"index bytes"
    digest = hashlib.sha256(data).hexdigest()
    cache.write_bytes(cache.blob_path(digest), data)
    assert cache.read_blob(digest) == data
    cache.blob_path(digest).write_bytes(b"index bytez")
    with pytest.raises(CorruptEntry, match="hashes to sha256:") as info:
        cache.read_blob(digest)
    assert info.value.path == cache.blob_path(digest)
    with pytest.raises(BlobNotFound, match="missing"):
        cache.read_blob("0" * 64)


def test_index_records(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    url = "http://127.0.0.1:1/repo/x86_64/APKINDEX.tar.gz"
    assert cache.load_index_record(url) is None
    rec = IndexRecord(url=url, sha256="ab" * 32, size=3, etag='"e"', last_modified="")
    cache.store_index_record(rec)
    assert cache.load_index_record(url) == rec
    path = cache.index_record_path(url)
    path.write_text("{not json")
    with pytest.raises(CorruptEntry, match="unreadable index record"):
        cache.load_index_record(url)
    path.write_text(json.dumps({**rec.__dict__, "url": "http://other/"}))
    with pytest.raises(CorruptEntry, match="record is for http://other/"):
        cache.load_index_record(url)


def _blocked_cache(tmp_path: Path) -> tuple[Cache, Path]:
    """A cache whose root is a regular file: nothing can be created under it."""
    root = tmp_path / "cache"
    root.write_bytes(b"a file, not a directory")
    return Cache(root), root


def test_unwritable_cache_is_a_cache_error_naming_the_path(tmp_path: Path) -> None:
    cache, root = _blocked_cache(tmp_path)
    dest = cache.package_path(REPLAYOUT_C)
    for attempt in (lambda: cache.write_bytes(dest, b"x"), lambda: cache.atomic(dest.parent),
                    lambda: cache.store_index_record(IndexRecord("http://x/", "ab" * 32, 1)),
                    lambda: cache.put_blob(b"x")):
        with pytest.raises(CacheError) as info:
            attempt()
        message = str(info.value)
        assert message.startswith(f"cache {root / 'v1'}/")  # the directory that failed
        assert message.endswith(": cannot write: Not a directory")
        assert not isinstance(info.value, FetchError)
    with pytest.raises(CacheError, match=f"cache {root}/v1/index/.*: cannot read"):
        cache.load_index_record("http://x/")


def test_expand_lock_that_cannot_be_taken_is_a_cache_error(tmp_path: Path) -> None:
    cache, root = _blocked_cache(tmp_path)
    paths = cache.expanded_paths("d7f1e149ec30c0e5e0974af47df6f43b4051b587")
    with pytest.raises(CacheError) as info, _locked(paths):
        pass
    assert str(info.value) == f"cache {paths.lock}: cannot lock: Not a directory"
    assert info.value.path == paths.lock


def test_entry_that_cannot_be_replaced_is_a_cache_error(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    dest = cache.package_path(REPLAYOUT_C)
    dest.mkdir(parents=True)  # a directory squats the entry's name: rename onto it fails
    (dest / "x").write_bytes(b"")
    with pytest.raises(CacheError, match=f"^cache {dest}: cannot store: "):
        cache.write_bytes(dest, b"package bytes")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["package.apk"]  # temp removed


def test_io_error_while_writing_an_entry_is_a_cache_error(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    dest = cache.package_path(REPLAYOUT_C)
    # named by its directory: the temp file is gone, and was never the entry
    with pytest.raises(CacheError, match=f"^cache {dest.parent}: cannot write: No space") as info:
        with cache.atomic(dest.parent) as tmp:
            tmp.file.write(b"part")
            raise OSError(28, "No space left on device")
    assert isinstance(info.value.__cause__, OSError)
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(ValueError, match="not an OSError"), cache.atomic(dest.parent):
        raise ValueError("not an OSError")  # other errors pass through unchanged


def _payload(writer: int, round_: int) -> bytes:
    """Self-checking content: 32-byte SHA-256 of the body, then a body of ~200 KiB."""
    body = (f"writer {writer} round {round_} ".encode()) * 8000
    return hashlib.sha256(body).digest() + body


def _hammer(root: str, writer: int, rounds: int) -> int:
    cache = Cache(root)
    dest = cache.package_path(REPLAYOUT_C)
    bad = 0
    for r in range(rounds):
        cache.write_bytes(dest, _payload(writer, r))
        data = dest.read_bytes()  # another writer may have replaced it: must still be whole
        if hashlib.sha256(data[32:]).digest() != data[:32]:
            bad += 1
    return bad


def test_concurrent_writers_leave_a_valid_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        bad = pool.starmap(_hammer, [(str(tmp_path), w, 40) for w in range(4)])
    assert bad == [0, 0, 0, 0]
    dest = Cache(tmp_path).package_path(REPLAYOUT_C)
    data = dest.read_bytes()
    assert hashlib.sha256(data[32:]).digest() == data[:32]
    leftovers = [p.name for p in dest.parent.iterdir() if p.name != dest.name]
    assert leftovers == []
    assert oct(os.stat(dest).st_mode & 0o777) == "0o644"
