"""The stitched layer format: same tree as the sorted layer (umoci unpack of both compared
entry by entry: type, mode, owner, mtime, content, link target, hardlink groups), most
compressed bytes reused from the packages, and a valid gzip stream for every fixture."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings

from builder.apk.writer import build_apk, build_control
from builder.cli import main
from builder.errors import ApkImageError
from perf.workloads import Workload
from tests.helpers import (
    FIXTURES,
    GOLDEN,
    GOLDEN_ANNOTATION_ARGS,
    REAL_PACKAGES,
    PackageSet,
    apks_of_package_set,
    build_in_process,
    differences,
    golden_workdir,
    is_install_conflict,
    package_sets,
    repo_from_apks,
    require_tool,
    snapshot,
    unpack,
)


def _build(config: Path, out: Path, impl: str, cache: Path, *extra: str) -> dict:
    spans = out.parent / f"spans-{out.name}.json"
    rc = main(["build", str(config), "t:1", str(out), "--cache-dir", str(cache), "--impl", impl,
               "--spans", str(spans), *extra])
    if rc != 0:
        raise ApkImageError(f"build --impl {impl} failed")
    return json.loads(spans.read_text())


def _compare_trees(config: Path, tmp: Path, *extra: str, cache: Path | None = None) -> dict:
    """Build sorted (fast) and stitched (cache: `tmp/cache` unless given); for each arch,
    unpack both and compare."""
    require_tool("umoci")
    cache = cache or tmp / "cache"
    sorted_doc = _build(config, tmp / "sorted", "fast", cache, *extra)
    stitched_doc = _build(config, tmp / "stitched", "stitched", cache, *extra)
    for arch, m in sorted_doc["image"]["manifests"].items():
        s = stitched_doc["image"]["manifests"][arch]
        a = snapshot(unpack(tmp / "sorted", m["digest"], tmp / f"u-sorted-{arch}"))
        b = snapshot(unpack(tmp / "stitched", s["digest"], tmp / f"u-stitched-{arch}"))
        assert differences(a, b) == []
        assert len(a) > 10
    return stitched_doc


def _reuse(doc: dict) -> tuple[int, int]:
    comp = [s for s in doc["spans"] if s["name"] == "compress"]
    return (sum(s["attrs"]["reused_bytes"] for s in comp),
            sum(s["attrs"]["recompressed_out"] for s in comp))


@pytest.mark.tools
def test_golden_fixture(tmp_path: Path, golden_cache: Path) -> None:
    wd = golden_workdir(tmp_path)
    _compare_trees(GOLDEN / "apko.yaml", tmp_path, "--workdir", str(wd),
                   *GOLDEN_ANNOTATION_ARGS, cache=golden_cache)


@pytest.mark.tools
@pytest.mark.parametrize("arch", sorted(REAL_PACKAGES))
def test_real_packages(tmp_path: Path, signing_key: tuple[bytes, bytes], arch: str) -> None:
    """Alpine (abuild), Wolfi and melange packages, the multi-member tzdata data section."""
    apks = {p: (FIXTURES / "apk" / p).read_bytes() for p in REAL_PACKAGES[arch]}
    cfg = repo_from_apks(tmp_path, apks, signing_key, arch=arch)
    doc = _compare_trees(cfg, tmp_path)
    reused, _ = _reuse(doc)
    assert reused > 0


@pytest.mark.tools
@pytest.mark.slow
def test_small_corpus_tree_and_reuse(small_workload: Workload, tmp_path: Path) -> None:
    tmp = tmp_path
    doc = _compare_trees(small_workload.config_path, tmp)
    reused, recompressed = _reuse(doc)
    blob = sum(la["size"] for m in doc["image"]["manifests"].values() for la in m["layers"])
    assert reused + recompressed <= blob
    # Small packages cut often; still most of the blob is the packages' own bytes.
    assert reused > 0.5 * blob, (reused, recompressed, blob)
    layer = next((tmp / "stitched" / "blobs" / "sha256").glob("*"), None)
    assert layer is not None


@pytest.mark.tools
@pytest.mark.slow
def test_random_package_sets(signing_key: tuple[bytes, bytes]) -> None:
    """Random overlapping dirs, symlinks, hardlinks and replaces: the stitched tree equals
    the sorted one. A set the install stage refuses as a conflict (INSTALL_CONFLICTS) is
    rejected by hypothesis (assume) and another drawn; any other build error fails."""
    require_tool("umoci")
    compared = []

    @settings(max_examples=15, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(pkgs=package_sets())
    def check(pkgs: PackageSet) -> None:
        with tempfile.TemporaryDirectory(prefix="stitch-prop-") as t:
            tmp = Path(t)
            cfg = repo_from_apks(tmp, apks_of_package_set(pkgs), signing_key,
                                 [n for n, _, _ in pkgs])
            try:  # in process: a refused set raises with the install stage's message
                build_in_process(cfg, tmp / "probe-cache", "fast", tmp / "probe")
            except ApkImageError as exc:
                assert is_install_conflict(exc), f"unexpected build error: {exc!r}"
                assume(False)
            _compare_trees(cfg, tmp)
            compared.append(pkgs)

    check()
    # Rejected sets do not count toward max_examples: hypothesis draws valid ones until it
    # has 15 (it stops early only when the strategy has nothing new to give).
    assert len(compared) >= 10, f"only {len(compared)} random package sets were compared"


def test_stitched_blob_is_one_valid_gzip_member(tmp_path: Path, golden_cache: Path) -> None:
    wd = golden_workdir(tmp_path)
    doc = _build(GOLDEN / "apko.yaml", tmp_path / "out", "stitched", golden_cache,
                 "--workdir", str(wd), *GOLDEN_ANNOTATION_ARGS)
    for m in doc["image"]["manifests"].values():
        blob = (tmp_path / "out" / "blobs" / "sha256" / m["layers"][0]["digest"][7:]).read_bytes()
        # Exactly one gzip member: gzip.decompress would also accept several, concatenated.
        member = zlib.decompressobj(31)
        tar = member.decompress(blob)
        assert member.eof and member.unused_data == b"", "more than one gzip member"
        assert tar.endswith(b"\0" * 1024)
        assert "sha256:" + hashlib.sha256(tar).hexdigest() == m["diff_ids"][0]


def test_layer_format_flag_selects_stitched(tmp_path: Path, golden_cache: Path) -> None:
    wd = golden_workdir(tmp_path)
    doc = _build(GOLDEN / "apko.yaml", tmp_path / "a", "reference", golden_cache,
                 "--workdir", str(wd), "--layer-format", "stitched", *GOLDEN_ANNOTATION_ARGS)
    assert doc["image"]["impl"]["layer"] == "stitched"
    assert doc["image"]["impl"]["expand"] == doc["image"]["impl"]["install"] == "fast"
    # The stitched format's compressor: it compresses only the bytes the layer cannot reuse.
    assert doc["image"]["impl"]["compress"] == "isal:2"
    compress = [s for s in doc["spans"] if s["name"] == "compress"]
    assert compress and all(s["attrs"]["compressor"] == "stitched+isal:2"
                            and s["attrs"]["output"] == "blob" for s in compress)
    back = _build(GOLDEN / "apko.yaml", tmp_path / "b", "stitched", golden_cache,
                  "--workdir", str(wd), "--layer-format", "sorted", *GOLDEN_ANNOTATION_ARGS)
    assert back["image"]["impl"]["layer"] == "fast"
    assert back["image"]["impl"]["compress"] == "isal-mt"  # the fast profile's


@pytest.mark.tools
def test_paths_mutations_rewrite_headers(tmp_path: Path,
                                          signing_key: tuple[bytes, bytes]) -> None:
    """apko's `paths` change a package file's mode and owner (a rewritten header, content
    still reused), add files, dirs and links: the stitched tree still equals the sorted one."""
    apks = {p: (FIXTURES / "apk" / p).read_bytes()
            for p in ["wolfi/hello-wolfi-2.12-r1.apk", "wolfi/libcap-2.69-r0.apk"]}
    cfg = repo_from_apks(tmp_path, apks, signing_key, arch="aarch64")
    cfg.write_text(cfg.read_text() + (
        "paths:\n"
        "  - {path: usr/bin/hello, type: permissions, permissions: 0o4750, uid: 1000, gid: 5}\n"
        "  - {path: srv/data, type: directory, permissions: 0o770, uid: 1000}\n"
        "  - {path: srv/data/empty, type: empty-file, permissions: 0o600}\n"
        "  - {path: srv/hello, type: symlink, source: /usr/bin/hello}\n"
        "  - {path: usr/share/locale, type: permissions, permissions: 0o700, recursive: true}\n"))
    doc = _compare_trees(cfg, tmp_path)
    layer = next(s for s in doc["spans"] if s["name"] == "layer")
    assert layer["attrs"]["entries_rewritten"] > 0


def _tarfile_apk(name: str, files: list[tuple[str, bytes | None, float]],
                 global_pax: dict[str, str] | None = None) -> bytes:
    """An unsigned .apk whose data tar Python's tarfile writes in PAX format: a float mtime
    becomes a sub-second PAX "mtime" record, as GNU tar's posix format writes them."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers=global_pax) as tf:
        for path, data, mtime in files:  # data None: a directory
            info = tarfile.TarInfo(path)
            info.mtime, info.mode = mtime, 0o755
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
                continue
            info.size = len(data)
            info.pax_headers = {"APK-TOOLS.checksum.SHA1": hashlib.sha1(data).hexdigest()}
            tf.addfile(info, io.BytesIO(data))
    data_gz = gzip.compress(buf.getvalue(), mtime=0)
    fields = {"pkgname": [name], "pkgver": ["1.0-r0"], "arch": ["x86_64"], "size": ["1"],
              "pkgdesc": ["sub-second mtimes"], "datahash": [hashlib.sha256(data_gz).hexdigest()]}
    return build_control(fields, {}, 0) + data_gz


@pytest.mark.tools
def test_sub_second_mtimes(tmp_path: Path, signing_key: tuple[bytes, bytes]) -> None:
    """Entries whose PAX mtime has a fraction get a rewritten header (whole seconds, rounded
    as apko's layer writer rounds them): the trees match to the nanosecond."""
    files = [(f"usr/bin/tool{i}", f"#!/bin/sh\necho {i}\n".encode() * 50, 1700000000 + f)
             for i, f in enumerate([0, 0.25, 0.5, 0.999999, 3])]
    dirs = [("usr", None, 1700000000), ("usr/bin", None, 1700000000.7)]
    apks = {"subsec-1.0-r0.apk": _tarfile_apk("subsec", dirs + files)}
    cfg = repo_from_apks(tmp_path, apks, signing_key)
    doc = _compare_trees(cfg, tmp_path)
    layer = next(s for s in doc["spans"] if s["name"] == "layer")
    assert layer["attrs"]["entries_rewritten"] == 3  # the three fractional ones


@pytest.mark.tools
def test_hardlink_to_a_file_mutate_replaces(tmp_path: Path,
                                            signing_key: tuple[bytes, bytes]) -> None:
    """A package's hardlink whose target `paths` empties: the target leaves the package
    stream, so the link must too (else it would name a file not yet unpacked)."""
    from builder.apk.writer import DataEntry

    entries = [DataEntry("etc", "dir"), DataEntry("etc/app", "dir"),
               DataEntry("etc/app/conf", data=b"setting=1\n" * 100),
               DataEntry("etc/app/conf.link", "hardlink", linkname="etc/app/conf"),
               DataEntry("etc/app/other", data=b"x" * 5000)]
    apk = build_apk({"pkgname": ["linked"], "pkgver": ["1-r0"], "arch": ["x86_64"]}, entries,
                    None, "")
    cfg = repo_from_apks(tmp_path, {"linked-1-r0.apk": apk}, signing_key)
    cfg.write_text(cfg.read_text() + (
        "paths:\n  - {path: etc/app/conf, type: empty-file, permissions: 0o644}\n"))
    _compare_trees(cfg, tmp_path)


@pytest.mark.tools
@pytest.mark.parametrize("first", ["dir", "file"])
def test_pax_global_header_is_not_copied(tmp_path: Path, signing_key: tuple[bytes, bytes],
                                         first: str) -> None:
    """A package tar that opens with a PAX global header: the entry it precedes is rewritten
    (a file) or left to the final stretch (a directory), so the layer carries no global
    records that would apply to other packages' entries."""
    files: list[tuple[str, bytes | None, float]] = [
        ("usr", None, 5), ("usr/bin", None, 5), ("usr/bin/a", b"a" * 3000, 5)]
    if first == "file":
        files.insert(0, ("README", b"hello\n", 5))
    apks = {"glob-1.0-r0.apk": _tarfile_apk("glob", files, {"comment": "from a test"})}
    cfg = repo_from_apks(tmp_path, apks, signing_key)
    doc = _compare_trees(cfg, tmp_path)
    manifest = next(iter(doc["image"]["manifests"].values()))
    blob = (tmp_path / "stitched" / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.read_bytes()))) as tf:
        tf.getmembers()
        assert tf.pax_headers == {}  # no global header survived


def test_blob_writer_copies_file_ranges_and_falls_back(tmp_path: Path) -> None:
    """Runs with an origin are copied file to file; where the kernel cannot (here a closed
    descriptor), the bytes are written from memory. Either way the blob and its digest hold
    exactly what was written."""
    import os

    from builder.layer.stitched import _COPY_MIN, _HashingFile

    src = tmp_path / "src.bin"
    payload = bytes(range(256)) * (3 * _COPY_MIN // 256)
    src.write_bytes(b"HEAD" + payload)
    fd = os.open(src, os.O_RDONLY)
    try:
        out = _HashingFile(tmp_path / "blob")
        out.write(b"gz-header")
        out.write(memoryview(payload), (fd, 4))  # copied by the kernel
        out.write(b"-")
        out.write(memoryview(payload)[:_COPY_MIN], (-1, 4))  # EBADF: written from memory
        digest = out.h.hexdigest()
        out.close()
    finally:
        os.close(fd)
    want = b"gz-header" + payload + b"-" + payload[:_COPY_MIN]
    assert (tmp_path / "blob").read_bytes() == want
    assert digest == hashlib.sha256(want).hexdigest()
