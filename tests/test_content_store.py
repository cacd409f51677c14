"""The content store (builder/repo/store.py): digest-addressed bodies, verified on every open,
written atomically, refused when the caller's digest is wrong, safe for concurrent writers."""

from __future__ import annotations

import errno
import hashlib
import http.server
import io
import multiprocessing
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import builder.repo.store as store_module
from builder.errors import ApkImageError, CacheError, FetchError, FormatError, VerificationError
from builder.repo.cache import Cache
from builder.repo.fetch import Fetcher
from builder.repo.store import (
    BlobNotFound,
    ContentStore,
    CorruptEntry,
    DigestMismatch,
    LocalContentStore,
    digest_of,
    parse_digest,
)
from builder.util.atomic import AtomicFile

BODY = b"some index bytes\n" * 1000
BODY_DIGEST = "sha256:" + hashlib.sha256(BODY).hexdigest()


def _files(store: LocalContentStore) -> list[str]:
    """Every name in the blob directory (temp files included)."""
    if not store.blob_dir.exists():
        return []
    return sorted(p.name for p in store.blob_dir.iterdir())


# -- interface and round trip -----------------------------------------------------------------


def test_local_store_is_a_content_store(tmp_path: Path) -> None:
    assert isinstance(LocalContentStore(tmp_path), ContentStore)
    assert not isinstance(object(), ContentStore)


def test_put_has_open_round_trip(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "blobs")
    assert not store.has(BODY_DIGEST)
    assert _files(store) == []
    assert store.put(BODY) == BODY_DIGEST
    assert store.has(BODY_DIGEST)
    # the cache's layout: <root>/sha256/<hex>, nothing else left in the directory
    assert store.path(BODY_DIGEST) == tmp_path / "blobs" / "sha256" / BODY_DIGEST[7:]
    assert _files(store) == [BODY_DIGEST[7:]]
    assert oct(os.stat(store.path(BODY_DIGEST)).st_mode & 0o777) == "0o644"
    with store.open(BODY_DIGEST) as f:
        assert f.tell() == 0
        assert f.read() == BODY
    assert store.read_bytes(BODY_DIGEST) == BODY


def test_put_takes_bytes_streams_and_paths(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "blobs")
    src = tmp_path / "src"
    src.write_bytes(BODY)
    assert store.put(bytearray(BODY), BODY_DIGEST) == BODY_DIGEST
    assert store.put(memoryview(BODY)) == BODY_DIGEST
    assert store.put(io.BytesIO(BODY), BODY_DIGEST) == BODY_DIGEST
    assert store.put(src, BODY_DIGEST) == BODY_DIGEST
    assert src.read_bytes() == BODY  # the source file is read, not moved
    big = os.urandom(3 * store_module.CHUNK + 17)  # several reads of the stream
    assert store.put(io.BytesIO(big)) == digest_of(big)
    with store.open(digest_of(big)) as f:
        assert f.read() == big
    empty = store.put(b"")
    assert empty == "sha256:" + hashlib.sha256(b"").hexdigest()
    assert store.read_bytes(empty) == b""
    assert sorted(_files(store)) == sorted([BODY_DIGEST[7:], digest_of(big)[7:], empty[7:]])


def test_missing_blob_is_reported_not_returned(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path)
    absent = digest_of(b"never stored")
    assert not store.has(absent)
    with pytest.raises(BlobNotFound, match="missing") as info:
        store.open(absent)
    assert info.value.path == store.path(absent)
    assert isinstance(info.value, CorruptEntry)  # one except clause refetches either way
    with pytest.raises(BlobNotFound):
        store.read_bytes(absent)


@pytest.mark.parametrize("bad", [
    "sha256:" + "A" * 64,  # upper case
    "sha256:" + "a" * 63,
    "sha512:" + "a" * 128,  # other algorithms are not supported
    "a" * 64,  # bare hex
    "sha256:../../../../etc/passwd",
    "sha256:" + "a" * 64 + "/x",
])
def test_malformed_digests_are_refused(tmp_path: Path, bad: str) -> None:
    store = LocalContentStore(tmp_path)
    for call in (store.has, store.open, store.path, parse_digest,
                 lambda d: store.put(b"x", d)):
        with pytest.raises(FormatError, match="malformed digest"):
            call(bad)
    assert list(tmp_path.iterdir()) == []


# -- verification -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "stream", "path"])
def test_put_with_wrong_digest_is_refused_and_leaves_nothing(tmp_path: Path, kind: str) -> None:
    store = LocalContentStore(tmp_path / "blobs")
    claimed = digest_of(b"what the caller thinks it has")
    src = tmp_path / "src"
    src.write_bytes(BODY)
    data: Any = {"bytes": BODY, "stream": io.BytesIO(BODY), "path": src}[kind]
    with pytest.raises(DigestMismatch) as info:
        store.put(data, claimed)
    message = str(info.value)
    assert claimed in message and BODY_DIGEST in message  # names both digests
    assert "\n" not in message
    assert isinstance(info.value, VerificationError)
    assert (info.value.expected, info.value.actual) == (claimed, BODY_DIGEST)
    assert not store.has(claimed) and not store.has(BODY_DIGEST)
    assert _files(store) == []  # no temp file either


def test_wrong_digest_does_not_disturb_a_stored_body(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path)
    store.put(BODY)
    with pytest.raises(DigestMismatch):
        store.put(b"impostor", BODY_DIGEST)
    assert store.read_bytes(BODY_DIGEST) == BODY
    assert _files(store) == [BODY_DIGEST[7:]]


@pytest.mark.parametrize("damage", ["same-size", "truncated", "emptied"])
def test_damaged_blob_is_never_returned(tmp_path: Path, damage: str) -> None:
    store = LocalContentStore(tmp_path)
    store.put(BODY)
    path = store.path(BODY_DIGEST)
    bad = {"same-size": BODY[:-1] + b"?", "truncated": BODY[:100], "emptied": b""}[damage]
    path.write_bytes(bad)
    actual = "sha256:" + hashlib.sha256(bad).hexdigest()
    assert store.has(BODY_DIGEST)  # has() does not hash; open() finds the damage
    for read in (store.open, store.read_bytes):
        with pytest.raises(CorruptEntry, match=f"hashes to {actual}") as info:
            read(BODY_DIGEST)
        assert info.value.path == path
        assert not isinstance(info.value, BlobNotFound)
    # the cache, which reads its index blobs through the store, reports the same
    cache = Cache(tmp_path / "cache")
    cache.blob_path(BODY_DIGEST[7:]).parent.mkdir(parents=True)
    cache.blob_path(BODY_DIGEST[7:]).write_bytes(bad)
    with pytest.raises(CorruptEntry, match=f"hashes to {actual}"):
        cache.read_blob(BODY_DIGEST[7:])
    # a put replaces the damaged body with a verified copy
    assert store.put(BODY) == BODY_DIGEST
    with store.open(BODY_DIGEST) as f:
        assert f.read() == BODY


def test_open_returns_the_bytes_it_verified(tmp_path: Path) -> None:
    """A body replaced after `open` (as a concurrent put does) does not change what the
    returned file reads: it is the file that was hashed."""
    store = LocalContentStore(tmp_path)
    store.put(BODY)
    with store.open(BODY_DIGEST) as f:
        other = tmp_path / "other"
        other.write_bytes(b"replacement")
        os.replace(other, store.path(BODY_DIGEST))
        assert f.read() == BODY


# -- atomicity --------------------------------------------------------------------------------


class SourceBroke(Exception):
    """Raised by the failing stream: the caller's error, which put must not disguise."""


class FailingStream(io.RawIOBase):
    """Gives `good` chunks of data, then fails; checks the store's directory meanwhile."""

    def __init__(self, store: LocalContentStore, good: int) -> None:
        self.store = store
        self.left = good
        self.seen: list[list[str]] = []

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.seen.append(_files(self.store))
        if self.left == 0:
            raise SourceBroke("source went away midway")
        self.left -= 1
        return b"x" * (size if size > 0 else 1000)


@pytest.mark.parametrize("told", [False, True])
def test_put_from_a_failing_stream_leaves_no_partial_blob(tmp_path: Path, told: bool) -> None:
    """Also when the digest is known up front (the final name could be written directly)."""
    store = LocalContentStore(tmp_path)
    src = FailingStream(store, good=3)
    with pytest.raises(SourceBroke):
        store.put(src, BODY_DIGEST if told else None)  # type: ignore[arg-type]
    # while it was being written, the only name in the directory was a temp file
    assert len(src.seen) == 4
    assert all(len(names) == 1 and names[0].startswith(".tmp-") for names in src.seen)
    assert _files(store) == []  # ... which is gone
    partial = b"x" * (3 * store_module.CHUNK)
    assert not store.has(digest_of(partial))


class _FillingFile:
    """A file whose second write fails as a full disk does."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._writes = 0

    def write(self, data: Any) -> int:
        self._writes += 1
        if self._writes > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class FullDisk(AtomicFile):
    """An AtomicFile on a disk that fills up after the first write."""

    def __init__(self, directory: Path, **kw: Any) -> None:
        super().__init__(directory, **kw)
        self.file = _FillingFile(self.file)  # type: ignore[assignment]


def test_put_failing_to_write_is_a_cache_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalContentStore(tmp_path)
    monkeypatch.setattr(store_module, "AtomicFile", FullDisk)
    data = os.urandom(2 * store_module.CHUNK + 1)
    with pytest.raises(CacheError, match="No space left on device") as info:
        store.put(io.BytesIO(data))
    assert str(store.blob_dir) in str(info.value)
    assert _files(store) == []
    assert not store.has(digest_of(data))


def test_unwritable_store_directory_is_a_cache_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a directory")
    store = LocalContentStore(blocker / "blobs")
    for data in (BODY, io.BytesIO(BODY)):
        with pytest.raises(CacheError) as info:
            store.put(data)
        message = str(info.value)
        assert message.startswith(f"cache {blocker / 'blobs' / 'sha256'}: cannot write")
        assert "\n" not in message
        assert isinstance(info.value, ApkImageError) and not isinstance(info.value, FetchError)
        assert info.value.path == store.blob_dir
    assert blocker.read_bytes() == b"not a directory"
    assert not store.has(BODY_DIGEST)


def test_cache_error_survives_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(CacheError(Path("/c/v1"), "cannot lock: busy")))
    assert isinstance(err, CacheError)
    assert (str(err), err.path, err.what) == ("cache /c/v1: cannot lock: busy", Path("/c/v1"),
                                              "cannot lock: busy")
    mismatch = pickle.loads(pickle.dumps(DigestMismatch("here", "sha256:a", "sha256:b")))
    assert (mismatch.expected, mismatch.actual) == ("sha256:a", "sha256:b")


# -- concurrent writers -----------------------------------------------------------------------

BIG = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1 << 16))  # 2 MiB
BIG_DIGEST = digest_of(BIG)


def test_threads_putting_the_same_content_all_succeed(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path)
    start = threading.Barrier(8)
    results: list[str] = []
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            start.wait()
            for _ in range(5):
                src: Any = io.BytesIO(BIG) if i % 2 else BIG
                results.append(store.put(src, BIG_DIGEST))
                with store.open(BIG_DIGEST) as f:  # verified: a torn body would raise
                    assert f.read() == BIG
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [BIG_DIGEST] * 40
    assert _files(store) == [BIG_DIGEST[7:]]
    assert store.path(BIG_DIGEST).read_bytes() == BIG


def _process_writer(root: str, rounds: int, go: Any, results: Any = None) -> int:
    """Put BIG `rounds` times, checking the stored body after each; the count of failures
    (also sent to `results` when given)."""
    store = LocalContentStore(root)
    go.wait()
    bad = 0
    for _ in range(rounds):
        if store.put(io.BytesIO(BIG)) != BIG_DIGEST:
            bad += 1
        try:
            with store.open(BIG_DIGEST) as f:
                bad += f.read() != BIG
        except CorruptEntry:
            bad += 1
    if results is not None:
        results.put(bad)
    return bad


def test_other_processes_putting_the_same_content(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    results = ctx.Queue()
    procs = [ctx.Process(target=_process_writer, args=(str(tmp_path), 30, go, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    go.set()
    here = _process_writer(str(tmp_path), 30, go)  # and this process too, at once
    got = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert (got, here) == ([0, 0], 0)
    store = LocalContentStore(tmp_path)
    assert _files(store) == [BIG_DIGEST[7:]]
    with store.open(BIG_DIGEST) as f:
        assert f.read() == BIG


# -- the cache and the fetcher over the store -------------------------------------------------


def test_cache_blobs_keep_the_v1_layout(tmp_path: Path) -> None:
    """Existing caches stay valid: a blob written where the cache always put them is found
    by the store, and the store puts new ones there."""
    cache = Cache(tmp_path)
    old = tmp_path / "v1" / "blobs" / "sha256" / BODY_DIGEST[7:]
    old.parent.mkdir(parents=True)
    old.write_bytes(BODY)
    assert cache.blobs.has(BODY_DIGEST)
    assert cache.read_blob(BODY_DIGEST[7:]) == BODY
    data = b"new body"
    hex_ = cache.put_blob(data)
    assert (tmp_path / "v1" / "blobs" / "sha256" / hex_).read_bytes() == data
    assert cache.blob_path(hex_) == cache.blobs.path(f"sha256:{hex_}")
    with pytest.raises(DigestMismatch):
        cache.put_blob(b"other", hex_)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the http.server API's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/x86_64/APKINDEX.tar.gz"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _reject(data: bytes, source: str) -> None:
    raise ValueError(f"{source}: rejected")


def test_fetched_urls_land_in_the_content_store(tmp_path: Path, url: str) -> None:
    cache = Cache(tmp_path / "cache")
    with Fetcher(cache=cache, retries=0) as fetcher:
        assert fetcher.fetch_url(url, lambda data, src: len(data)) == len(BODY)
    record = cache.load_index_record(url)
    assert record is not None and f"sha256:{record.sha256}" == BODY_DIGEST
    with cache.blobs.open(BODY_DIGEST) as f:
        assert f.read() == BODY
    assert _files(cache.blobs) == [BODY_DIGEST[7:]]
    # content the parser rejects is not stored at all
    other = tmp_path / "other"
    with Fetcher(cache_dir=other, retries=0) as fetcher, \
            pytest.raises(ValueError, match="rejected"):
        fetcher.fetch_url(url, _reject)
    assert not other.exists() or list(other.rglob("*")) == []


@pytest.mark.parametrize("blocked", ["cache root", "blob directory"])
def test_fetch_into_an_unwritable_cache_is_a_cache_error(
    tmp_path: Path, url: str, blocked: str
) -> None:
    """A regular file where the cache (or its blob directory) should be: the fetch fails
    with CacheError naming the path (a cache fault, not a FetchError)."""
    root = tmp_path / "cache"
    if blocked == "cache root":
        root.write_bytes(b"")
        named = root / "v1" / "index"  # read first, and unreadable
    else:
        (root / "v1").mkdir(parents=True)
        (root / "v1" / "blobs").write_bytes(b"")
        named = root / "v1" / "blobs" / "sha256"  # the index record is simply absent
    with Fetcher(cache_dir=root, retries=0) as fetcher, pytest.raises(CacheError) as info:
        fetcher.fetch_url(url, lambda data, src: data)
    assert not isinstance(info.value, FetchError)
    assert str(info.value).startswith(f"cache {named}")
    assert "Not a directory" in str(info.value)
