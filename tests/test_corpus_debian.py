"""Debian → APK conversion: version mapping, ELF SONAME reader, caches (closure, .deb hashes,
conversions), and (network) a round trip, a cached second run and the debian workload."""

from __future__ import annotations

import io
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

import perf.corpus.debian as debian
from builder.apk.index import read_index
from builder.apk.package import read_apk, verify_apk
from builder.apk.signing import Keyring
from perf.corpus import CorpusError, CorpusInfo
from perf.corpus.content import ContentGenerator
from perf.corpus.debian import (
    DebFile,
    DebHashes,
    _parse_relations,
    _satisfies,
    apk_version,
    convert_corpus,
    elf_soname,
    mirror_reachable,
    resolve_debs,
    usrmerge_path,
)
from perf.workloads import prepare_workload

APK_VERSION_RE = (r"^([0-9]+)((\.[0-9]+)*)([a-z]?)((_alpha|_beta|_pre|_rc)([0-9]*))?"
                  r"((_cvs|_svn|_git|_hg|_p)([0-9]*))?((-r)([0-9]+))?$")


@pytest.mark.parametrize(("deb", "apk"), [
    ("5.2.15-2+b13", "5.2.15-r2"),
    ("1:2.39.2-1.1", "2.39.2-r1"),
    ("3.0.11-1~deb12u2", "3.0.11-r1"),
    ("2.2.0~rc1-3", "2.2.0_rc1-r3"),
    ("20230311", "20230311-r0"),
    ("1.2.13.dfsg-1", "1.2.13-r1"),
    ("2:1.0", "1.0-r0"),
    ("abc", "0-r0"),
])
def test_version_mapping(deb: str, apk: str) -> None:
    import re

    assert apk_version(deb) == apk
    assert re.match(APK_VERSION_RE, apk)


def test_relations_and_constraints() -> None:
    assert _parse_relations("libc6 (>= 2.36), mawk | gawk, perl:any, x (<< 3)") == [
        [("libc6", ">=", "2.36")], [("mawk", "", ""), ("gawk", "", "")],
        [("perl", "", "")], [("x", "<<", "3")],
    ]
    assert _satisfies("2.36-r9", ">=", "2.36-r0")
    assert not _satisfies("2.36-r9", "<", "2.36-r0")
    assert _satisfies("2.2.0_rc1-r3", "<", "2.2.0-r0")


def test_usrmerge_paths() -> None:
    assert usrmerge_path("bin/bash") == "usr/bin/bash"
    assert usrmerge_path("lib64") == "usr/lib64"
    assert usrmerge_path("usr/bin/ls") == "usr/bin/ls"
    assert usrmerge_path("binary/x") == "binary/x"


def test_elf_soname_reader() -> None:
    gen = ContentGenerator(1)
    assert elf_soname(gen.make("so", 20_000, soname="libdemo.so.7")) == "libdemo.so.7"
    assert elf_soname(gen.make("elf", 20_000)) is None  # executable, not ET_DYN
    assert elf_soname(b"not an elf") is None
    system = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")
    if system.exists():
        assert elf_soname(system.read_bytes()) == "libc.so.6"


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not mirror_reachable():
        pytest.skip("Debian mirror unreachable (apt-get download)")
    out = tmp_path_factory.mktemp("deb-bash")
    cache = tmp_path_factory.mktemp("deb-cache")
    convert_corpus(out, "small", ["bash"], cache)
    return out, cache


def _apk_paths(apk_path: Path) -> list[str]:
    apk = read_apk(apk_path.read_bytes(), str(apk_path))
    raw = zlib.decompressobj(31).decompress(apk.data)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return [m.name for m in tf.getmembers() if not m.isdir()]


@pytest.mark.network
@pytest.mark.slow  # the `converted` fixture converts bash's closure
def test_round_trip_file_lists(converted: tuple[Path, Path]) -> None:
    out, cache = converted
    for name in ("bash", "libc6"):
        deb = next((cache / "debs").glob(f"{name}_*.deb"))
        listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                                 check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(listing)) as tf:
            want = [usrmerge_path(m.name.removeprefix("./")) for m in tf.getmembers()
                    if not m.isdir()]
        got = _apk_paths(next((out / "x86_64").glob(f"{name}-[0-9]*.apk")))
        assert got == want


@pytest.mark.network
@pytest.mark.slow  # the `converted` fixture converts bash's closure
def test_converted_repo_verifies(converted: tuple[Path, Path]) -> None:
    out, _ = converted
    info = CorpusInfo.load(out / "corpus.json")
    keyring = Keyring.from_paths([out / info.key_name])
    index = read_index((out / "x86_64" / "APKINDEX.tar.gz").read_bytes(), keyring, "index")
    pkgs = {p.name: p for p in index.packages}
    assert {"bash", "libc6", "debian-baselayout"} <= set(pkgs)
    for path in sorted((out / "x86_64").glob("*.apk")):
        apk = read_apk(path.read_bytes(), str(path))
        verify_apk(apk, keyring, expected=pkgs[apk.package.name])
    assert "so:libc.so.6=6" in pkgs["libc6"].provides
    assert any(p.startswith("cmd:bash=") for p in pkgs["bash"].provides)
    assert "debian-baselayout" in pkgs["bash"].depends
    base = _apk_paths(out / "x86_64" / f"debian-baselayout-{pkgs['debian-baselayout'].version}.apk")
    assert {"bin", "lib", "lib64", "sbin"} <= set(base)
    provided = {p.split("=")[0] for pkg in pkgs.values() for p in pkg.provides}
    for pkg in pkgs.values():
        for dep in pkg.depends:
            name = dep.split(">")[0].split("<")[0].split("=")[0]
            assert name in pkgs or name in provided, f"{pkg.name}: unsatisfied {dep}"


def test_deb_hashes_read_each_file_once(tmp_path: Path) -> None:
    import hashlib
    import os

    deb = tmp_path / "x_1.0-1_amd64.deb"
    deb.write_bytes(b"first")
    want = hashlib.sha256(b"first").hexdigest()
    hashes = DebHashes(tmp_path)
    assert hashes.digest(deb, want) == want and hashes.hashed == 1
    hashes.save()
    again = DebHashes(tmp_path)  # a new run: the recorded digest, the file is not read
    assert again.digest(deb) == want and again.hashed == 0
    deb.write_bytes(b"other")  # new size and mtime: hashed again
    os.utime(deb, ns=(1, 1))
    assert again.digest(deb) == hashlib.sha256(b"other").hexdigest() and again.hashed == 1
    with pytest.raises(CorpusError, match=r"x_1\.0-1_amd64\.deb: SHA-256 .* does not match"):
        again.digest(deb, want)


def test_closure_cached_until_apt_lists_change(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    stamp = [("/var/lib/apt/lists/x_Packages", 10, 1)]

    def closure(roots: list[str]) -> list[str]:
        calls.append(list(roots))
        return sorted({*roots, "libc6"})

    def uris(names: list[str]) -> dict[str, DebFile]:
        return {n: DebFile(n, f"{n}_1_amd64.deb", 100, "0" * 64) for n in names}

    monkeypatch.setattr(debian, "resolve_closure", closure)
    monkeypatch.setattr(debian, "apt_print_uris", uris)
    monkeypatch.setattr(debian, "_apt_stamp", lambda: stamp)
    first = resolve_debs(["bash"], tmp_path)
    assert [d.name for d in first] == ["bash", "libc6"] and len(calls) == 1
    assert resolve_debs(["bash"], tmp_path) == first and len(calls) == 1
    assert [d.name for d in resolve_debs(["coreutils"], tmp_path)] == ["coreutils", "libc6"]
    assert len(calls) == 2
    stamp[0] = ("/var/lib/apt/lists/x_Packages", 10, 2)  # apt-get update
    resolve_debs(["bash"], tmp_path)
    assert len(calls) == 3


@pytest.mark.network
@pytest.mark.slow  # the `converted` fixture converts bash's closure
def test_second_run_reuses_everything(converted: tuple[Path, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Same cache, second run: no apt-cache, no .deb parsed or hashed, nothing compressed or
    signed, no package re-read for its index record — and the same bytes."""
    first, cache = converted

    def forbidden(*_a: object, **_k: object) -> None:
        raise AssertionError("a cached step ran again")

    for name in ("resolve_closure", "apt_print_uris", "deb_entries", "write_data_tar",
                 "build_control", "read_apk", "_file_sha256"):
        monkeypatch.setattr(debian, name, forbidden)
    info = convert_corpus(tmp_path / "again", "small", ["bash"], cache)
    assert info.extra["debs_hashed"] == 0
    for path in sorted((first / "x86_64").iterdir()):
        assert (tmp_path / "again" / "x86_64" / path.name).read_bytes() == path.read_bytes()


@pytest.mark.network
@pytest.mark.slow  # the `converted` fixture converts bash's closure
def test_debian_workload_prepared_once(converted: tuple[Path, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`prepare_workload("debian-small")`: generated into place (no temp dirs left), with
    paths pointing at the final directory; a second call reuses it."""
    _, cache = converted
    w = prepare_workload("debian-small", tmp_path / "wl", debian_cache=cache)
    assert w.repo_dir == tmp_path / "wl" / f"debian-small-v{debian.CONVERTER_VERSION}"
    assert sorted(p.name for p in (tmp_path / "wl").iterdir()) == [w.repo_dir.name]
    assert str(w.repo_dir) in w.config_path.read_text()
    assert w.key_path.is_file() and (w.repo_dir / "x86_64" / "APKINDEX.tar.gz").is_file()
    monkeypatch.setattr(debian, "convert_corpus", lambda *a, **k: pytest.fail("regenerated"))
    assert prepare_workload("debian-small", tmp_path / "wl", debian_cache=cache) == w


def test_closure_walks_first_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    """One recursive listing; first alternatives, virtual names through their first provider;
    a chosen package missing from the listing is asked for; an unknown root is an error."""
    listing = {
        "app": [[("libc6", [])], [("mawk", []), ("gawk", [])], [("<awk-virtual>", ["gawk"])],
                [("late", [])]],
        "libc6": [], "mawk": [[("libc6", [])]], "gawk": [], "unused": [],
    }
    calls: list[tuple[tuple[str, ...], bool]] = []

    def depends(names: list[str], recurse: bool = False) -> dict:
        calls.append((tuple(names), recurse))
        if recurse:
            return {n: g for n, g in listing.items() if n != "late"}
        return {n: [] for n in names if n in ("late", "app")}

    monkeypatch.setattr(debian, "_apt_depends", depends)
    assert debian.resolve_closure(["app"]) == ["app", "gawk", "late", "libc6", "mawk"]
    assert calls == [(("app",), True), (("late",), False)]
    with pytest.raises(CorpusError, match="no such Debian package: nope"):
        debian.resolve_closure(["app", "nope"])
