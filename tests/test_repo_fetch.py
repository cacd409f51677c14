"""The `index` and `fetch` stages against a real HTTP(S) server on 127.0.0.1.

The server serves the apko golden repository (signed index + 4 packages per arch) straight
from the fixtures, counts every request, and can be told to fail (5xx, cut bodies).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from builder.apk.model import Package
from builder.apk.signing import Keyring
from builder.errors import FetchError, VerificationError
from builder.repo.fetch import Fetcher
from builder.repo.fetch_packages import fetch_parallel, fetch_reference
from builder.repo.indexes import load_indexes
from builder.repo.repository import Repository, parse_repository
from tests.helpers import GOLDEN, GOLDEN_REPO, KEYS, RepoServer, fast_fetcher

ARCH = "x86_64"
NAMES = ["custom-ca-certs-1", "custom-ca-certs-2", "pretend-baselayout", "replayout"]


@pytest.fixture
def server() -> Iterator[RepoServer]:
    with RepoServer(GOLDEN_REPO) as srv:
        yield srv


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.from_paths([GOLDEN / "melange.rsa.pub"])


def build_once(
    repo: Repository, cache_dir: Path, keyring: Keyring, **kw: object
) -> tuple[list[Package], dict[str, Path], Fetcher]:
    with fast_fetcher(cache_dir, **kw) as fetcher:
        pkgs = load_indexes([repo], ARCH, keyring, fetcher)
        paths = fetch_reference(pkgs, ARCH, fetcher, keyring)
    return pkgs, paths, fetcher


def assert_fixture_bytes(paths: dict[str, Path]) -> None:
    assert sorted(paths) == NAMES
    for name, path in paths.items():
        (fixture,) = (GOLDEN_REPO / ARCH).glob(f"{name}-1.0.0-r0.apk")
        assert path.read_bytes() == fixture.read_bytes(), name


# -- happy paths ----------------------------------------------------------------------------


def test_http_cold_then_hot(server: RepoServer, keyring: Keyring, tmp_path: Path) -> None:
    repo = parse_repository(f"@golden {server.url}/")
    pkgs, paths, fetcher = build_once(repo, tmp_path, keyring)
    assert sorted(p.name for p in pkgs) == NAMES
    assert {(p.repository, p.repository_tag) for p in pkgs} == {(server.url, "golden")}
    assert_fixture_bytes(paths)
    assert all(tmp_path in p.parents for p in paths.values())
    assert len(server.gets(".apk")) == 4 and len(server.gets("APKINDEX.tar.gz")) == 1
    assert len(server.client_ports) == 1  # one pooled keep-alive connection for all 5 GETs
    total = sum(f.stat().st_size for f in (GOLDEN_REPO / ARCH).iterdir())
    assert fetcher.stats.bytes_fetched == total
    assert (fetcher.stats.cache_misses, fetcher.stats.cache_hits) == (5, 0)

    server.requests.clear()
    _, hot_paths, hot = build_once(repo, tmp_path, keyring)
    assert hot_paths == paths
    assert server.gets(".apk") == []  # packages come from the cache
    assert len(server.gets("APKINDEX.tar.gz")) == 1  # one conditional GET, answered 304
    assert (hot.stats.cache_hits, hot.stats.not_modified, hot.stats.bytes_fetched) == (5, 1, 0)


def test_changed_index_is_refetched(keyring: Keyring, tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    shutil.copytree(GOLDEN_REPO, repo_dir)
    index = repo_dir / ARCH / "APKINDEX.tar.gz"
    with RepoServer(repo_dir) as srv, fast_fetcher(tmp_path / "cache") as fetcher:
        first = load_indexes([Repository(srv.url)], ARCH, keyring, fetcher)
        assert {p.arch for p in first} == {"x86_64"}
        index.chmod(0o644)  # publish a new index (same key): the ETag changes
        index.write_bytes((GOLDEN_REPO / "aarch64" / "APKINDEX.tar.gz").read_bytes())
        second = load_indexes([Repository(srv.url)], ARCH, keyring, fetcher)
        assert {p.arch for p in second} == {"aarch64"}
        assert fetcher.stats.not_modified == 0 and fetcher.stats.cache_misses == 2
    with fast_fetcher(tmp_path / "cache", offline=True) as offline:
        third = load_indexes([Repository(srv.url)], ARCH, keyring, offline)
    assert {p.arch for p in third} == {"aarch64"}  # the cache holds the newest copy


def test_file_url_and_plain_path(keyring: Keyring, tmp_path: Path) -> None:
    for text in (str(GOLDEN_REPO), GOLDEN_REPO.as_uri() + "/"):
        repo = parse_repository(text)
        _, paths, fetcher = build_once(repo, tmp_path / "cache", keyring)
        assert_fixture_bytes(paths)
        assert all(p.parent == GOLDEN_REPO / ARCH for p in paths.values())  # read in place
        assert fetcher.stats.requests == 0 and fetcher._session is None
    # Nothing of the repository is copied: the cache holds only the verified index's memo.
    stored = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert stored and all("index-parsed" in p.parts for p in stored), stored


def test_https_with_ca_file(keyring: Keyring, tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path)
    with RepoServer(GOLDEN_REPO, tls_files=(cert, key)) as tls:
        repo = parse_repository(tls.url)
        _, paths, _ = build_once(repo, tmp_path / "c1", keyring, ca_file=str(cert))
        assert_fixture_bytes(paths)
        with pytest.raises(FetchError, match=r"https://127\.0\.0\.1:\d+/x86_64/APKINDEX.*TLS"):
            build_once(repo, tmp_path / "c2", keyring)


def test_missing_local_index_is_a_warning(
    keyring: Keyring, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "empty-repo"
    empty.mkdir()
    with fast_fetcher(tmp_path / "cache") as fetcher, caplog.at_level(logging.WARNING):
        pkgs = load_indexes(
            [Repository(str(empty)), Repository(str(GOLDEN_REPO))], ARCH, keyring, fetcher
        )
    assert sorted(p.name for p in pkgs) == NAMES
    assert f"{empty}/x86_64/APKINDEX.tar.gz" in caplog.text


# -- cache damage and offline ---------------------------------------------------------------


def test_corrupt_cache_entry_is_refetched(
    server: RepoServer, keyring: Keyring, tmp_path: Path
) -> None:
    repo = Repository(server.url)
    _, paths, _ = build_once(repo, tmp_path, keyring)
    victim = paths["replayout"]
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF  # inside the data member: datahash no longer matches
    victim.write_bytes(bytes(data))
    server.requests.clear()
    _, again, fetcher = build_once(repo, tmp_path, keyring)
    assert server.gets(".apk") == ["/x86_64/replayout-1.0.0-r0.apk"]
    assert_fixture_bytes(again)
    assert fetcher.stats.corrupt_entries == 1


def test_corrupt_cache_entry_offline_is_a_clear_error(
    server: RepoServer, keyring: Keyring, tmp_path: Path
) -> None:
    repo = Repository(server.url)
    _, paths, _ = build_once(repo, tmp_path, keyring)
    paths["pretend-baselayout"].write_bytes(b"not an apk")
    server.requests.clear()
    with pytest.raises(FetchError) as info:
        build_once(repo, tmp_path, keyring, offline=True)
    msg = str(info.value)
    assert msg.startswith("offline: cached pretend-baselayout-1.0.0-r0")
    assert str(paths["pretend-baselayout"]) in msg and "corrupt" in msg
    assert server.requests == []


def test_corrupt_index_blob_offline_names_the_entry(
    server: RepoServer, keyring: Keyring, tmp_path: Path
) -> None:
    repo = Repository(server.url)
    build_once(repo, tmp_path, keyring)
    (blob,) = (tmp_path / "v1" / "blobs" / "sha256").iterdir()
    blob.write_bytes(blob.read_bytes()[:-1])
    server.requests.clear()
    with pytest.raises(FetchError, match=f"offline: cached index for {server.url}.*{blob}"):
        build_once(repo, tmp_path, keyring, offline=True)
    assert server.requests == []
    # online, the damaged index is simply fetched again
    _, paths, fetcher = build_once(repo, tmp_path, keyring)
    assert_fixture_bytes(paths)
    assert fetcher.stats.corrupt_entries == 1 and fetcher.stats.not_modified == 0


def test_offline_sends_no_requests(server: RepoServer, keyring: Keyring, tmp_path: Path) -> None:
    repo = Repository(server.url)
    _, paths, _ = build_once(repo, tmp_path, keyring)
    server.requests.clear()
    _, offline_paths, fetcher = build_once(repo, tmp_path, keyring, offline=True)
    assert offline_paths == paths
    assert server.requests == []
    assert fetcher._session is None and fetcher.stats.requests == 0
    assert fetcher.stats.cache_hits == 5


def test_offline_with_empty_cache_refuses(
    server: RepoServer, keyring: Keyring, tmp_path: Path
) -> None:
    repo = Repository(server.url)
    with pytest.raises(FetchError, match="offline: index .* is not in the cache"):
        build_once(repo, tmp_path, keyring, offline=True)
    pkg = Package(name="replayout", version="1.0.0-r0", checksum="Q11/HhSewwwOXgl0r0ffb0O0BRtYc=",
                  repository=server.url)
    with fast_fetcher(tmp_path, offline=True) as fetcher:
        with pytest.raises(FetchError, match="offline: replayout-1.0.0-r0 is not in the cache"):
            fetch_reference([pkg], ARCH, fetcher, keyring)
        with pytest.raises(FetchError, match="offline: would fetch http://"):
            fetcher._session_for(f"{server.url}/x")
    assert server.requests == []


# -- network trouble ------------------------------------------------------------------------


def test_5xx_twice_then_200_is_retried(
    server: RepoServer, keyring: Keyring, tmp_path: Path
) -> None:
    server.fail["/x86_64/APKINDEX.tar.gz"] = [503, 502]
    server.fail["/x86_64/replayout-1.0.0-r0.apk"] = [500, 504]
    _, paths, _ = build_once(Repository(server.url), tmp_path, keyring)
    assert_fixture_bytes(paths)
    assert len(server.gets("APKINDEX.tar.gz")) == 3
    assert len(server.gets("replayout-1.0.0-r0.apk")) == 3


def test_persistent_5xx_names_url_and_status(
    server: RepoServer, keyring: Keyring, tmp_path: Path
) -> None:
    server.fail["/x86_64/APKINDEX.tar.gz"] = [503] * 10
    with pytest.raises(FetchError, match=f"{server.url}/x86_64/APKINDEX.tar.gz: HTTP 503"):
        build_once(Repository(server.url), tmp_path, keyring)
    assert len(server.gets()) == 3  # first try + 2 retries
    assert not (tmp_path / "v1" / "index").exists()


def test_body_cut_short_is_retried(server: RepoServer, keyring: Keyring, tmp_path: Path) -> None:
    server.fail["/x86_64/custom-ca-certs-1-1.0.0-r0.apk"] = ["cut"]
    _, paths, _ = build_once(Repository(server.url), tmp_path, keyring)
    assert_fixture_bytes(paths)
    assert len(server.gets("custom-ca-certs-1-1.0.0-r0.apk")) == 2


def test_unreachable_repository_fails_fast(keyring: Keyring, tmp_path: Path) -> None:
    with socket.socket() as s:  # grab a free port, then close it: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/repo"
    start = time.monotonic()
    with pytest.raises(FetchError, match=f"{url}/x86_64/APKINDEX.tar.gz: cannot connect"):
        build_once(Repository(url), tmp_path, keyring, timeout=1.0)
    assert time.monotonic() - start < 5


def test_malformed_checksum_names_the_package(server: RepoServer, tmp_path: Path) -> None:
    pkg = Package(name="odd", version="1-r0", checksum="Q1short", repository=server.url)
    with fast_fetcher(tmp_path) as fetcher, pytest.raises(
        VerificationError, match=r"^odd-1-r0 \(http://.*\): checksum 'Q1short'"
    ):
        fetch_reference([pkg], ARCH, fetcher)
    assert server.requests == []


def test_missing_remote_package_is_404(
    server: RepoServer, keyring: Keyring, tmp_path: Path
) -> None:
    pkg = Package(name="nothere", version="1-r0", checksum="Q11/HhSewwwOXgl0r0ffb0O0BRtYc=",
                  repository=server.url)
    with fast_fetcher(tmp_path) as fetcher, pytest.raises(FetchError, match="nothere.*HTTP 404"):
        fetch_reference([pkg], ARCH, fetcher, keyring)


# -- verification ---------------------------------------------------------------------------


def test_bad_index_signature(server: RepoServer, tmp_path: Path) -> None:
    wrong = Keyring.from_paths([KEYS / "wolfi-signing.rsa.pub"])
    with pytest.raises(VerificationError, match=f"{server.url}/x86_64/APKINDEX.tar.gz"):
        build_once(Repository(server.url), tmp_path, wrong)
    assert not (tmp_path / "v1" / "index").exists()  # an unverified index is never cached


def test_tampered_index_signature(keyring: Keyring, tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    shutil.copytree(GOLDEN_REPO, repo_dir)
    index = repo_dir / ARCH / "APKINDEX.tar.gz"
    index.chmod(0o644)
    index.write_bytes(retamper_signature(index.read_bytes()))
    with RepoServer(repo_dir) as srv, pytest.raises(VerificationError):
        build_once(Repository(srv.url), tmp_path / "cache", keyring)


def test_package_not_matching_index_is_rejected_and_not_cached(
    keyring: Keyring, tmp_path: Path
) -> None:
    repo_dir = tmp_path / "repo"
    shutil.copytree(GOLDEN_REPO, repo_dir)
    arch_dir = repo_dir / ARCH
    arch_dir.chmod(0o755)
    swapped = arch_dir / "replayout-1.0.0-r0.apk"
    swapped.chmod(0o644)
    # same size class, different package: C: cannot match
    swapped.write_bytes((arch_dir / "pretend-baselayout-1.0.0-r0.apk").read_bytes())
    with RepoServer(repo_dir) as srv:
        with fast_fetcher(tmp_path / "cache") as fetcher:
            pkgs = load_indexes([Repository(srv.url)], ARCH, keyring, fetcher)
            bad = [p for p in pkgs if p.name == "replayout"]
            with pytest.raises(VerificationError, match="replayout"):
                fetch_reference(bad, ARCH, fetcher, keyring)
            dest = fetcher.cache.package_path(bad[0].checksum)
        assert not dest.exists()
        assert list(dest.parent.iterdir()) == []  # no temp file left behind


def test_concurrent_fetchers_share_the_cache(
    server: RepoServer, keyring: Keyring, tmp_path: Path
) -> None:
    results: list[dict[str, Path]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(build_once(Repository(server.url), tmp_path, keyring)[1])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(results) == 4 and all(r == results[0] for r in results)
    assert_fixture_bytes(results[0])


def test_fetch_url_caches_keys_and_limits_size(server: RepoServer, tmp_path: Path) -> None:
    url = f"{server.url}/melange.rsa.pub"
    expected = (GOLDEN_REPO / "melange.rsa.pub").read_bytes()
    with fast_fetcher(tmp_path) as fetcher:
        assert fetcher.fetch_url(url, lambda data, src: data, what="key") == expected
    with fast_fetcher(tmp_path, offline=True) as offline:
        assert offline.fetch_url(url, lambda data, src: data, what="key") == expected
        with pytest.raises(FetchError, match=r"offline: key http://.*/other.rsa.pub is not in"):
            offline.fetch_url(f"{server.url}/other.rsa.pub", lambda data, src: data, "key")
    with fast_fetcher(tmp_path / "small", max_response_bytes=100) as small:
        with pytest.raises(FetchError, match="melange.rsa.pub: response larger than 100 bytes"):
            small.fetch_url(url, lambda data, src: data)
    assert not (tmp_path / "small" / "v1" / "index").exists()


# -- the parallel fetch implementation ------------------------------------------------------


def test_parallel_fetch_matches_serial(
    server: RepoServer, keyring: Keyring, tmp_path: Path
) -> None:
    repo = Repository(server.url)
    _, serial, _ = build_once(repo, tmp_path / "serial", keyring)
    with fast_fetcher(tmp_path / "parallel") as fetcher:
        pkgs = load_indexes([repo], ARCH, keyring, fetcher)
        parallel = fetch_parallel(pkgs, ARCH, fetcher, keyring, workers=4)
        assert fetcher.stats.cache_misses == 5
        server.requests.clear()
        again = fetch_parallel(pkgs, ARCH, fetcher, keyring)
    assert again == parallel and server.requests == []
    assert_fixture_bytes(parallel)
    assert {n: p.relative_to(tmp_path / "parallel") for n, p in parallel.items()} == {
        n: p.relative_to(tmp_path / "serial") for n, p in serial.items()
    }


def test_parallel_fetch_overlaps_latency(
    server: RepoServer, keyring: Keyring, tmp_path: Path
) -> None:
    repo = Repository(server.url)
    with fast_fetcher(tmp_path / "idx") as fetcher:
        pkgs = load_indexes([repo], ARCH, keyring, fetcher)
    server.delay = 0.25
    timings = {}
    for name, fn in (("serial", fetch_reference), ("parallel", fetch_parallel)):
        with fast_fetcher(tmp_path / name) as fetcher:
            start = time.monotonic()
            fn(pkgs, ARCH, fetcher, keyring)
            timings[name] = time.monotonic() - start
    assert timings["serial"] >= 4 * 0.25
    assert timings["parallel"] < timings["serial"] * 0.6, timings


def test_parallel_fetch_raises_the_failure(
    server: RepoServer, keyring: Keyring, tmp_path: Path
) -> None:
    with fast_fetcher(tmp_path) as fetcher:
        pkgs = load_indexes([Repository(server.url)], ARCH, keyring, fetcher)
        server.fail["/x86_64/pretend-baselayout-1.0.0-r0.apk"] = [404]
        with pytest.raises(FetchError, match="pretend-baselayout-1.0.0-r0.apk: HTTP 404"):
            fetch_parallel(pkgs, ARCH, fetcher, keyring)


# -- helpers --------------------------------------------------------------------------------


def make_self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (EC key: fast to make)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def retamper_signature(index: bytes) -> bytes:
    """The same index with one bit of its RSA signature flipped (gzip and tar kept valid)."""
    import gzip
    import io
    import tarfile
    import zlib

    d = zlib.decompressobj(31)
    sig_tar = d.decompress(index)
    rest = d.unused_data
    with tarfile.open(fileobj=io.BytesIO(sig_tar + b"\0" * 1024)) as tf:
        member = tf.getmembers()[0]
        sig = bytearray(tf.extractfile(member).read())  # type: ignore[union-attr]
    sig[len(sig) // 2] ^= 0x01
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo(member.name)
        info.size = len(sig)
        tf.addfile(info, io.BytesIO(bytes(sig)))
    return gzip.compress(out.getvalue()[: 512 + ((len(sig) + 511) // 512) * 512]) + rest


def test_revalidation_without_requests(keyring: Keyring, tmp_path: Path) -> None:
    """An index's conditional GET goes over http.client: a 304 or a changed body is handled
    there, in one request and without the requests session; a 5xx is left to the session's
    retrying path, which then answers it."""
    repo_dir = tmp_path / "repo"
    shutil.copytree(GOLDEN_REPO, repo_dir)
    index = repo_dir / ARCH / "APKINDEX.tar.gz"
    with RepoServer(repo_dir) as srv:
        with fast_fetcher(tmp_path / "cache") as cold:
            load_indexes([Repository(srv.url)], ARCH, keyring, cold)
        with fast_fetcher(tmp_path / "cache") as hot:
            load_indexes([Repository(srv.url)], ARCH, keyring, hot)
            assert hot._session is None and hot.stats.not_modified == 1
        index.chmod(0o644)
        index.write_bytes((GOLDEN_REPO / "aarch64" / "APKINDEX.tar.gz").read_bytes())
        srv.requests.clear()
        with fast_fetcher(tmp_path / "cache") as changed:
            got = load_indexes([Repository(srv.url)], ARCH, keyring, changed)
            assert {p.arch for p in got} == {"aarch64"} and changed._session is None
            assert len(srv.gets("APKINDEX.tar.gz")) == 1 and changed.stats.cache_misses == 1
        srv.fail[f"/{ARCH}/APKINDEX.tar.gz"] = [503]
        with fast_fetcher(tmp_path / "cache") as flaky:
            again = load_indexes([Repository(srv.url)], ARCH, keyring, flaky)
            assert flaky._session is not None  # the retrying path took over
            assert {p.arch for p in again} == {"aarch64"}


def test_hot_remote_build_does_not_import_requests(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.helpers import GOLDEN, REPO_ROOT

    with RepoServer(GOLDEN_REPO) as srv:
        cfg = tmp_path / "apko.yaml"
        cfg.write_text(f"contents:\n  keyring:\n    - {GOLDEN / 'melange.rsa.pub'}\n"
                       f"  repositories:\n    - {srv.url}\n  packages:\n    - replayout\n"
                       "archs: [x86_64]\n")
        code = ("import sys\nfrom builder.cli import main\n"
                f"rc = main(['build', {str(cfg)!r}, 't', sys.argv[1], '--impl', 'fast', "
                f"'--cache-dir', {str(tmp_path / 'cache')!r}])\n"
                "print(rc, 'requests' in sys.modules, 'cryptography' in sys.modules)\n")
        outs = [subprocess.run([sys.executable, "-c", code, str(tmp_path / f"o{i}")],
                               cwd=REPO_ROOT, capture_output=True, text=True,
                               check=True).stdout for i in range(2)]
    assert outs == ["0 True True\n", "0 False False\n"]
