"""The fast `fetch` and `expand` stages: same results as the reference, the data section is
decompressed once ever (hot expands never inflate), damaged cache artefacts are rebuilt,
verification failures are still caught, concurrent expands leave a valid cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from builder.apk.layout import read_layout
from builder.apk.writer import DataEntry, build_apk
from builder.deflate.block_index import scan_blocks
from builder.errors import FormatError, VerificationError
from builder.expand import cached as expand_cache
from builder.expand.cached import FastExpandedPackage, expand_cached, load_or_build_block_index
from builder.repo.cache import Cache
from builder.repo.fetch_packages import fetch_fast
from builder.repo.indexes import load_indexes
from builder.repo.repository import Repository
from builder.repo.verify import verify_package_fast, verify_package_file
from builder.stages.expand import expand_fast, expand_reference
from tests.helpers import (
    FIXTURES,
    GOLDEN,
    GOLDEN_CONFIGS,
    GOLDEN_DIFF_IDS,
    GOLDEN_REPO,
    REPO_ROOT,
    RepoServer,
    build_golden,
    fast_fetcher,
)

NEGATIVE = sorted((FIXTURES / "apk" / "negative").glob("*.apk"))
GOOD = sorted(p for p in (FIXTURES / "apk").glob("**/*.apk") if "negative" not in p.parts) \
    + sorted((GOLDEN / "packages").glob("*/*.apk"))
TZDATA = FIXTURES / "apk" / "melange-local" / "tzdata-2023c-r0.multimember.x86_64.apk"


def _key(p: Path) -> str:
    return f"{p.parent.name}/{p.name}"


def assert_same(ref, fast) -> None:  # noqa: ANN001 - ExpandedPackage pair
    assert isinstance(fast, FastExpandedPackage)
    assert fast.package == ref.package
    assert fast.control_sha1 == ref.control_sha1
    assert fast.pkginfo == ref.pkginfo
    assert fast.control == ref.control
    assert fast.entries == ref.entries
    assert fast.data_size == ref.data_size
    assert fast.data_tar.read_bytes() == ref.data_tar.read_bytes()
    for e in fast.entries[:20]:
        assert fast.read(e) == ref.read(e)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    wd = tmp_path_factory.mktemp("ref")
    return expand_reference({_key(p): p for p in GOOD}, wd)


def test_fixture_packages_are_there() -> None:
    assert len(GOOD) >= 20 and TZDATA in GOOD and len(NEGATIVE) == 2


def test_fast_equals_reference_cold_and_hot(reference: dict, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    paths = {_key(p): p for p in GOOD}
    cold = expand_fast(paths, tmp_path / "wd", cache=cache)
    assert list(cold) == list(paths)  # the input order, whatever the pool's order
    for name in paths:
        assert_same(reference[name], cold[name])
        key = cold[name].control_sha1.hex()
        assert cold[name].data_tar == cache.base / "apk" / key[:2] / key / "data.tar"
    hot = expand_fast(paths, tmp_path / "wd", cache=cache)
    for name in paths:
        assert hot[name].from_cache
        assert_same(reference[name], hot[name])


def test_multimember_with_tiny_pieces(reference: dict, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk and output limits far smaller than the members, so members end inside chunks
    and output is drained in many pieces."""
    layout = read_layout(TZDATA)
    from builder.deflate.gzipstream import split_members
    members = split_members(TZDATA.read_bytes(), str(TZDATA))
    assert len([m for m in members if m[0] >= layout.control_end]) > 1  # really multi-member
    monkeypatch.setattr(expand_cache, "CHUNK", 1000)
    monkeypatch.setattr(expand_cache, "OUT_LIMIT", 777)
    got = expand_cached(TZDATA, Cache(tmp_path))
    assert_same(reference[_key(TZDATA)], got)


def test_hot_expand_never_decompresses(reference: dict, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path / "cache")
    paths = {_key(p): p for p in GOOD}
    calls = []
    real = expand_cache.new_decompressor

    def counting() -> object:
        calls.append(1)
        return real()

    monkeypatch.setattr(expand_cache, "new_decompressor", counting)
    expand_fast(paths, tmp_path / "wd", cache=cache)
    assert calls  # the cold expand did inflate

    def forbidden() -> object:
        raise AssertionError("a hot expand decompressed a data section")

    monkeypatch.setattr(expand_cache, "new_decompressor", forbidden)
    monkeypatch.setattr(expand_cache, "scan_blocks", forbidden)
    hot = expand_fast(paths, tmp_path / "wd2", cache=cache)
    assert all(e.from_cache for e in hot.values())
    for name in paths:
        assert_same(reference[name], hot[name])


def _artefact(cache: Cache, path: Path, name: str) -> Path:
    return cache.expanded_paths(read_layout(path).key).dir / name


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    with open(p, "r+b") as f:  # in place, same size
        f.write(data)


@pytest.mark.parametrize("damage", [
    "flip-tar", "truncate-tar", "delete-tar", "flip-index", "garbage-manifest",
    "delete-manifest", "other-format", "flip-control",
])
def test_damaged_artefacts_are_detected_and_rebuilt(
    damage: str, reference: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = GOLDEN / "packages" / "x86_64" / "pretend-baselayout-1.0.0-r0.apk"
    cache = Cache(tmp_path)
    first = expand_cached(path, cache)
    assert not first.from_cache
    tar = _artefact(cache, path, "data.tar")
    manifest = _artefact(cache, path, "expand.json")
    if damage == "flip-tar":
        _flip(tar)
    elif damage == "truncate-tar":
        os.truncate(tar, tar.stat().st_size - 512)
    elif damage == "delete-tar":
        tar.unlink()
    elif damage == "flip-index":
        _flip(_artefact(cache, path, "tarindex.json"))
    elif damage == "flip-control":
        _flip(_artefact(cache, path, "control.json"))
    elif damage == "garbage-manifest":
        manifest.write_bytes(b"{not json")
    elif damage == "delete-manifest":
        manifest.unlink()
    elif damage == "other-format":
        doc = json.loads(manifest.read_bytes())
        doc["format"] = -1
        manifest.write_text(json.dumps(doc))
    again = expand_cached(path, cache)
    assert not again.from_cache  # rebuilt
    assert_same(reference[_key(path)], again)
    if damage == "other-format":  # what every package looks like after an upgrade
        assert "another cache format are rebuilt" in caplog.text
    elif damage != "delete-manifest":
        assert "rebuilding" in caplog.text
    assert expand_cached(path, cache).from_cache  # and valid again


def test_cache_of_another_format_is_reported_once(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """After an upgrade every cached expansion is of the old format: one line, not one per
    package."""
    paths = {p.name: p for p in (GOLDEN / "packages" / "x86_64").glob("*.apk")}
    assert len(paths) > 2
    cache = Cache(tmp_path)
    expand_fast(paths, tmp_path / "wd", cache=cache)
    for p in paths.values():
        manifest = _artefact(cache, p, "expand.json")
        doc = json.loads(manifest.read_bytes())
        doc["format"] = 1
        manifest.write_text(json.dumps(doc))
    caplog.clear()
    again = expand_fast(paths, tmp_path / "wd2", cache=cache)
    assert not any(e.from_cache for e in again.values())
    lines = [r for r in caplog.records if "cache" in r.getMessage()]
    assert len(lines) == 1 and "another cache format" in lines[0].getMessage()


def test_rebuild_removes_temp_files_left_by_a_killed_build(tmp_path: Path) -> None:
    path = GOLDEN / "packages" / "x86_64" / "replayout-1.0.0-r0.apk"
    cache = Cache(tmp_path)
    pkg_dir = cache.expanded_paths(read_layout(path).key).dir
    pkg_dir.mkdir(parents=True)
    old, fresh = pkg_dir / ".tmp-old", pkg_dir / ".tmp-fresh"
    old.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 2 * expand_cache.STALE_TMP_SECONDS,) * 2)
    assert not expand_cached(path, cache).from_cache
    assert not old.exists() and fresh.exists()  # a live writer's temp file is left alone


def test_package_without_datahash_is_keyed_by_its_data_too(tmp_path: Path) -> None:
    """Without datahash the control member does not pin the data section: two .apks with
    the same control and different data must not share an expansion."""
    from builder.apk.writer import build_control, write_data_tar

    control = build_control({"pkgname": ["nodh"], "pkgver": ["1-r0"]}, {}, 0)
    apks = []
    for i, text in enumerate((b"first\n", b"second\n")):
        data, _ = write_data_tar([DataEntry("etc", "dir", 0o755),
                                  DataEntry("etc/which", data=text)])
        apks.append(tmp_path / f"nodh{i}.apk")
        apks[-1].write_bytes(control + data)
    cache = Cache(tmp_path / "cache")
    first = expand_cached(apks[0], cache)
    assert not first.package.datahash and not first.from_cache
    assert expand_cached(apks[0], cache).from_cache
    second = expand_cached(apks[1], cache)
    assert not second.from_cache  # same key, other data: rebuilt, not reused
    ref = expand_reference({"x": apks[1]}, tmp_path / "ref")["x"]
    assert_same(ref, second)
    assert second.read(second.entries[-1]) == b"second\n"


def _bad_package(tmp_path: Path) -> Path:
    good, evil = b"the real content\n", b"the evil content\n"
    entries = [
        DataEntry("etc", "dir", 0o755),
        DataEntry("etc/ok", data=b"fine\n"),
        DataEntry("etc/motd", data=evil, sha1=hashlib.sha1(good).hexdigest(), size=len(evil)),
    ]
    raw = build_apk({"pkgname": ["bad"], "pkgver": ["1-r0"]}, entries, None, "")
    path = tmp_path / "bad-1-r0.apk"
    path.write_bytes(raw)
    return path


def test_per_file_sha1_mismatch_is_caught_and_nothing_cached(tmp_path: Path) -> None:
    path = _bad_package(tmp_path)
    with pytest.raises(VerificationError,
                       match=r"bad-1-r0 \(.*bad-1-r0.apk\): etc/motd: content SHA-1"):
        expand_reference({"bad": path}, tmp_path / "ref")
    cache = Cache(tmp_path / "cache")
    with pytest.raises(VerificationError,
                       match=r"bad-1-r0 \(.*bad-1-r0.apk\): etc/motd: content SHA-1"):
        expand_fast({"bad": path}, tmp_path / "wd", cache=cache)
    pkg_dir = cache.expanded_paths(read_layout(path).key).dir
    assert not (pkg_dir / "expand.json").exists()
    assert not (pkg_dir / "data.tar").exists()
    assert not [p for p in pkg_dir.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("path", NEGATIVE, ids=lambda p: p.name)
def test_datahash_mismatch_is_caught(path: Path, tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="does not match .PKGINFO datahash"):
        expand_reference({"x": path}, tmp_path / "ref")
    with pytest.raises(VerificationError, match="does not match .PKGINFO datahash"):
        expand_fast({"x": path}, tmp_path / "wd", cache=Cache(tmp_path / "cache"))


def test_truncated_data_section_is_a_format_error(tmp_path: Path) -> None:
    raw = TZDATA.read_bytes()
    layout = read_layout(TZDATA)
    cut = tmp_path / "cut.apk"
    cut.write_bytes(raw[: layout.control_end + (len(raw) - layout.control_end) // 2])
    with pytest.raises((FormatError, VerificationError)):
        expand_fast({"x": cut}, tmp_path / "wd", cache=Cache(tmp_path / "cache"))


@pytest.mark.parametrize("mangle", ["empty", "short", "garbage-after-data", "control-only",
                                    "cut-in-control", "not-gzip"])
def test_malformed_packages_are_format_errors_like_the_reference(mangle: str,
                                                                 tmp_path: Path) -> None:
    raw = TZDATA.read_bytes()
    layout = read_layout(TZDATA)
    bad = {
        "empty": b"",
        "short": raw[:10],
        "garbage-after-data": raw + b"trailing junk",
        "control-only": raw[: layout.control_end],
        "cut-in-control": raw[: layout.control_start + 40],
        "not-gzip": b"PK\x03\x04" + raw[4:],
    }[mangle]
    path = tmp_path / "bad.apk"
    path.write_bytes(bad)
    # Trailing bytes also change the data section's SHA-256: both expansions check datahash
    # before they inflate, so they report that.
    error = VerificationError if mangle == "garbage-after-data" else FormatError
    with pytest.raises(error):
        expand_reference({"x": path}, tmp_path / "ref")
    with pytest.raises(error):
        expand_fast({"x": path}, tmp_path / "wd", cache=Cache(tmp_path / "cache"))


def _big_package(tmp_path: Path) -> Path:
    """A few MB of data so that concurrent expands really overlap."""
    entries = [DataEntry("usr", "dir", 0o755), DataEntry("usr/share", "dir", 0o755)]
    for i in range(40):
        body = hashlib.sha256(str(i).encode()).digest() * (4096 * (i % 5 + 1))
        entries.append(DataEntry(f"usr/share/f{i:03}", data=body))
    path = tmp_path / "big-1-r0.apk"
    path.write_bytes(build_apk({"pkgname": ["big"], "pkgver": ["1-r0"]}, entries, None, ""))
    return path


def test_concurrent_expands_threads_and_processes(tmp_path: Path) -> None:
    path = _big_package(tmp_path)
    ref = expand_reference({"big": path}, tmp_path / "ref")["big"]
    cache = Cache(tmp_path / "cache")
    # Two other processes and two threads of this one, all at once, all cold.
    code = ("import sys; from pathlib import Path; from builder.repo.cache import Cache; "
            "from builder.expand.cached import expand_cached; "
            "e = expand_cached(Path(sys.argv[1]), Cache(sys.argv[2])); print(e.data_size)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(cache.root)],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    results: list[FastExpandedPackage] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(expand_cached(path, cache))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert not errors
    assert all(p.returncode == 0 for p in procs)
    assert [int(o) for o in outs] == [ref.data_size] * 2
    for r in results:
        assert_same(ref, r)
    # The cache holds one valid expansion, no temp files; a later expand is a hit.
    pkg_dir = cache.expanded_paths(read_layout(path).key).dir
    assert not [p for p in pkg_dir.iterdir() if p.name.startswith(".tmp-")]
    hot = expand_cached(path, cache)
    assert hot.from_cache
    assert_same(ref, hot)


def test_block_index_on_demand_and_cached(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path)
    exp = expand_fast({"tz": TZDATA}, tmp_path / "wd", cache=cache)["tz"]
    assert isinstance(exp, FastExpandedPackage)
    manifest = exp.cache_dir / "expand.json"
    assert "blocks.json" not in json.loads(manifest.read_bytes())["artefacts"]
    want = _want_index(TZDATA)
    assert exp.block_index() == want
    assert len(want.members) > 1 and want.size == exp.data_size
    assert "blocks.json" in json.loads(manifest.read_bytes())["artefacts"]

    def forbidden(*a: object) -> None:
        raise AssertionError("block index recomputed")

    monkeypatch.setattr(expand_cache, "scan_blocks", forbidden)
    hot = expand_fast({"tz": TZDATA}, tmp_path / "wd", cache=cache)["tz"]
    assert load_or_build_block_index(hot) == want  # from blocks.json: a scan would raise
    # A damaged blocks.json is recomputed, not trusted.
    _flip(exp.cache_dir / "blocks.json")
    monkeypatch.undo()
    assert hot.block_index() == want


def _counting_scan(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def counting(data: object, source: str = "", sink: object = None) -> object:
        calls.append(source)
        return scan_blocks(data, source, sink)  # type: ignore[arg-type]

    monkeypatch.setattr(expand_cache, "scan_blocks", counting)
    return calls


def _no_isal(*a: object) -> object:
    raise AssertionError("ISA-L inflate used although the block index was asked for")


def _want_index(path: Path):  # noqa: ANN202 - BlockIndex
    """A separate scan of the data section, plus the early end before the tar's end-of-archive
    marker that the expand records with it."""
    import dataclasses
    import zlib

    from builder.apk.tarindex import index_tar
    from builder.deflate.splice import Source, early_end

    section = path.read_bytes()[read_layout(path).control_end:]
    index = scan_blocks(section, path.name)
    parts, rest = [], section
    while rest:
        d = zlib.decompressobj(31)
        parts.append(d.decompress(rest))
        rest = d.unused_data
    tar = b"".join(parts)
    end = index_tar(tar).entries[-1].end_offset
    found = early_end(Source(compressed=section, index=index, uncompressed=tar), end)
    assert found is not None and found.out <= end
    return dataclasses.replace(index, early_ends={end: found})


def test_block_index_recorded_in_the_single_cold_pass(reference: dict, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With block_index, each data section is inflated once, by the Z_BLOCK scan, which
    writes data.tar (same bytes as the ISA-L path) and the index (same as a separate scan)
    together; a hot expand then inflates nothing and reads blocks.json."""
    wants = {_key(p): _want_index(p) for p in GOOD}
    plain = expand_fast({_key(p): p for p in GOOD}, tmp_path / "wd0",
                        cache=Cache(tmp_path / "isal"))
    cache = Cache(tmp_path / "cache")
    paths = {_key(p): p for p in GOOD}
    calls = _counting_scan(monkeypatch)
    monkeypatch.setattr(expand_cache, "new_decompressor", _no_isal)
    cold = expand_fast(paths, tmp_path / "wd", cache=cache, block_index=True)
    distinct = len({read_layout(p).key for p in GOOD})  # some fixtures are the same package
    assert len(calls) == distinct  # one pass per package, nothing else
    for name, exp in cold.items():
        assert_same(reference[name], exp)
        assert exp.data_tar.read_bytes() == plain[name].data_tar.read_bytes()
        assert exp.known_block_index == wants[name]  # made in the pass, or loaded
        assert exp.block_index() == wants[name]
        doc = json.loads((exp.cache_dir / "expand.json").read_bytes())
        isal_doc = json.loads((plain[name].cache_dir / "expand.json").read_bytes())
        assert doc["artefacts"]["data.tar"] == isal_doc["artefacts"]["data.tar"]  # CRC, size
        assert "blocks.json" in doc["artefacts"]
    assert len(calls) == distinct  # block_index() reused what the expand recorded
    assert len(wants["melange-local/" + TZDATA.name].members) > 1

    def forbidden(*a: object) -> None:
        raise AssertionError("a hot expand decompressed a data section")

    monkeypatch.setattr(expand_cache, "new_decompressor", forbidden)
    monkeypatch.setattr(expand_cache, "scan_blocks", forbidden)
    hot = expand_fast(paths, tmp_path / "wd2", cache=cache, block_index=True)
    for name, exp in hot.items():
        assert exp.from_cache
        assert_same(reference[name], exp)
        assert exp.block_index() == wants[name]


def test_block_index_added_to_an_expansion_made_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache filled by a fast build (no block index) used by a stitched one: the index
    is scanned once, in the expand stage; data.tar is neither inflated again nor rewritten."""
    cache = Cache(tmp_path)
    first = expand_fast({"tz": TZDATA}, tmp_path / "wd", cache=cache)["tz"]
    manifest = first.cache_dir / "expand.json"
    assert "blocks.json" not in json.loads(manifest.read_bytes())["artefacts"]
    inode = first.data_tar.stat().st_ino
    calls = _counting_scan(monkeypatch)
    monkeypatch.setattr(expand_cache, "new_decompressor", _no_isal)
    again = expand_fast({"tz": TZDATA}, tmp_path / "wd", cache=cache,
                        block_index=True)["tz"]
    assert isinstance(again, FastExpandedPackage)
    assert again.from_cache and len(calls) == 1
    assert again.known_block_index == _want_index(TZDATA)
    assert again.data_tar.stat().st_ino == inode
    assert "blocks.json" in json.loads(manifest.read_bytes())["artefacts"]
    third = expand_fast({"tz": TZDATA}, tmp_path / "wd", cache=cache,
                        block_index=True)["tz"]
    assert len(calls) == 1 and third.block_index() == again.known_block_index


def test_single_pass_with_tiny_output_pieces(reference: dict, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan's output buffer far smaller than tzdata's members: data.tar is written in
    many pieces that cross block and member ends, and is still byte for byte the same."""
    from builder.deflate import block_index as deflate_index

    monkeypatch.setattr(deflate_index, "_OUT_CHUNK", 777)
    got = expand_cached(TZDATA, Cache(tmp_path), block_index=True)
    assert_same(reference[_key(TZDATA)], got)
    monkeypatch.undo()
    assert got.known_block_index == _want_index(TZDATA)


@pytest.mark.parametrize("mangle", ["truncated", "corrupt"])
def test_single_pass_bad_data_is_an_error_and_nothing_cached(mangle: str,
                                                             tmp_path: Path) -> None:
    """A data section that does not inflate (the datahash is left out so the check reaches
    the inflate): FormatError, no manifest, no data.tar, no temp files."""
    from builder.apk.writer import build_control, write_data_tar

    data, _ = write_data_tar([DataEntry("etc", "dir", 0o755),
                              DataEntry("etc/f", data=bytes(range(256)) * 400)])
    if mangle == "truncated":
        data = data[: len(data) // 2]
    else:
        raw = bytearray(data)
        raw[len(raw) // 2: len(raw) // 2 + 4] = b"\xff\x00\xff\x00"
        data = bytes(raw)
    path = tmp_path / "bad.apk"
    path.write_bytes(build_control({"pkgname": ["bad"], "pkgver": ["1-r0"]}, {}, 0) + data)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(FormatError, match=r"bad.apk\): data section: (corrupt|truncated)"):
        expand_fast({"bad": path}, tmp_path / "wd", cache=cache, block_index=True)
    pkg_dir = cache.expanded_paths(read_layout(path).key).dir
    assert not [p.name for p in pkg_dir.iterdir() if not p.name.startswith(".expand.lock")]


# -- fetch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOOD[:6] + NEGATIVE, ids=lambda p: p.name)
def test_fast_verify_agrees_with_reference(path: Path) -> None:
    layout = read_layout(path)
    from builder.expand.cached import _package, _parse_control

    pkg = _package(layout, _parse_control(layout)[0])
    outcomes = []
    for verify in (verify_package_file, verify_package_fast):
        try:
            verify(path, pkg)
            outcomes.append("ok")
        except VerificationError as exc:
            outcomes.append(str(exc).split(":")[1].strip())
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0] == "ok") == (path not in NEGATIVE)
    # Wrong size, wrong C:, wrong name: rejected by both.
    for change in ({"size": pkg.size + 1}, {"checksum": "Q1" + "A" * 27 + "="},
                   {"name": "other"}):
        bad = type(pkg)(**{**pkg.__dict__, **change})
        for verify in (verify_package_file, verify_package_fast):
            with pytest.raises(VerificationError):
                verify(path, bad)


def test_fast_fetch_over_http_cold_hot_and_rejects_bad(tmp_path: Path) -> None:
    from builder.apk.signing import Keyring

    keyring = Keyring.from_paths([GOLDEN / "melange.rsa.pub"])
    with RepoServer(GOLDEN_REPO) as srv, fast_fetcher(tmp_path / "cache") as fetcher:
        pkgs = load_indexes([Repository(srv.url)], "x86_64", keyring, fetcher)
        cold = fetch_fast(pkgs, "x86_64", fetcher, None)
        assert sorted(cold) == sorted(p.name for p in pkgs)
        assert fetcher.stats.cache_misses >= len(pkgs)
        for p in pkgs:
            assert cold[p.name] == fetcher.cache.package_path(p.checksum)
            fixture = GOLDEN_REPO / "x86_64" / p.filename
            assert cold[p.name].read_bytes() == fixture.read_bytes()
        srv.requests.clear()
        hot = fetch_fast(pkgs, "x86_64", fetcher, None)
        assert hot == cold and srv.gets(".apk") == []
        # A damaged cached package is fetched again.
        victim = next(p for p in pkgs if p.name == "replayout")
        _flip(cold["replayout"])
        fetch_fast([victim], "x86_64", fetcher, None)
        assert srv.gets(".apk") == [f"/x86_64/{victim.filename}"]
        # A package that does not match its index record is refused and not cached.
        wrong = type(victim)(**{**victim.__dict__, "checksum": pkgs[0].checksum,
                                "name": "replayout"})
        wrong.size = victim.size
        with pytest.raises(VerificationError, match="replayout"):
            fetch_fast([wrong], "x86_64", fetcher, None)


# -- the whole build --------------------------------------------------------------------------


def test_golden_build_with_fast_fetch_and_expand(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    ref = build_golden(tmp_path, tmp_path / "ref")["image"]
    spec = "reference,fetch=fast,expand=fast"
    t0 = time.monotonic()
    doc = build_golden(tmp_path, tmp_path / "fast", "--impl", spec)
    assert time.monotonic() - t0 < 30
    image = doc["image"]
    assert image["impl"]["fetch"] == "fast" and image["impl"]["expand"] == "fast"
    for arch in ("amd64", "arm64"):
        assert image["manifests"][arch]["diff_ids"] == [GOLDEN_DIFF_IDS[arch]]
        assert image["manifests"][arch]["config_digest"] == GOLDEN_CONFIGS[arch]
    assert image["index_digest"] == ref["index_digest"]
    # Second build, same cache: every package's expansion comes from the cache.
    again = build_golden(tmp_path, tmp_path / "fast2", "--impl", spec)
    assert again["image"]["index_digest"] == ref["index_digest"]
    spans = [s for s in again["spans"] if s["name"] == "expand"]
    assert spans and all(s["attrs"]["cache_hits"] > 0 for s in spans)
    resolved = {s["arch"]: s["attrs"]["packages"] for s in again["spans"]
                if s["name"] == "resolve"}
    assert {s["arch"]: s["attrs"]["cache_hits"] for s in spans} == resolved


def test_package_head_read_once_per_build(tmp_path: Path) -> None:
    """Fetch's verification and the expand stage share the head of a settled package file:
    the second read_layout of an unchanged file is the same object; a changed file is read
    again; a file changed in the last two seconds is never kept."""
    from builder.apk import layout as apk_layout

    old = tmp_path / "old.apk"
    old.write_bytes(TZDATA.read_bytes())
    past = time.time() - 10
    os.utime(old, (past, past))
    # ctime is now: not settled yet, so not kept.
    assert apk_layout.read_layout(old) is not apk_layout.read_layout(old)
    kept = apk_layout.read_layout(TZDATA)  # a fixture file, settled long ago
    assert apk_layout.read_layout(TZDATA) is kept
    fresh = tmp_path / "fresh.apk"
    fresh.write_bytes(TZDATA.read_bytes())
    first = apk_layout.read_layout(fresh)
    fresh.write_bytes(b"\0" * 8 + TZDATA.read_bytes()[8:])  # changed in place: read again
    with pytest.raises(FormatError):
        apk_layout.read_layout(fresh)
    assert first.key == kept.key
