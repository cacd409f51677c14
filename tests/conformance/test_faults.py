"""The same fault gives the same error class and message from every implementation of the
stage that meets it (expand, fetch, install), and leaves nothing behind in the cache."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.apk.layout import read_layout
from builder.apk.model import Package
from builder.apk.package import read_apk
from builder.apk.writer import DataEntry, build_apk
from builder.errors import ApkImageError
from builder.expand.model import ExpandedPackage
from builder.install.apkdb import init_db
from builder.install.rules import InstallState
from builder.repo.fetch import Fetcher
from builder.stages.registry import current
from builder.stages.spec import Impl
from tests.helpers import FIXTURES, GOLDEN

GOOD = GOLDEN / "packages" / "x86_64" / "pretend-baselayout-1.0.0-r0.apk"
NEGATIVE = sorted((FIXTURES / "apk" / "negative").glob("*.apk"))  # datahash does not match


def _apk(tmp: Path, name: str, entries: list[DataEntry], **info: list[str]) -> Path:
    fields = {"pkgname": [name], "pkgver": ["1-r0"], "arch": ["x86_64"], "origin": [name],
              **info}
    path = tmp / f"{name}-1-r0.apk"
    path.write_bytes(build_apk(fields, entries, None, ""))
    return path


def _wrong_sha1(tmp: Path) -> Path:
    good, evil = b"the real content\n", b"the evil content\n"
    return _apk(tmp, "bad", [
        DataEntry("etc", "dir", 0o755), DataEntry("etc/ok", data=b"fine\n"),
        DataEntry("etc/motd", data=evil, sha1=hashlib.sha1(good).hexdigest(), size=len(evil))])


def _not_gzip(tmp: Path) -> Path:
    path = tmp / "garbled.apk"
    path.write_bytes(b"PK\x03\x04" + GOOD.read_bytes()[4:])
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.apk"
    path.write_bytes(b"")
    return path


EXPAND_FAULTS: dict[str, Callable[[Path], Path]] = {
    "per-file SHA-1": _wrong_sha1,
    "datahash": lambda tmp: NEGATIVE[0],
    "not gzip": _not_gzip,
    "empty file": _empty,
}


def _outcome(call: Callable[[], object]) -> tuple[type, str]:
    with pytest.raises(ApkImageError) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("fault", sorted(EXPAND_FAULTS))
def test_expand_faults(expand_impl: Impl, fault: str, tmp_path: Path) -> None:
    path = EXPAND_FAULTS[fault](tmp_path)
    ref = current().get("expand", "reference").obj
    want = _outcome(lambda: ref({"x": path}, tmp_path / "ref"))
    cache_dir = tmp_path / "cache"
    from builder.repo.cache import Cache

    got = _outcome(lambda: expand_impl.obj({"x": path}, tmp_path / "wd",
                                           cache=Cache(cache_dir), block_index=True))
    assert got == want
    # Nothing half-made is left to be trusted by the next build.
    assert not list(cache_dir.rglob("expand.json")) and not list(cache_dir.rglob(".tmp-*"))


def _record(path: Path) -> Package:
    """The index record of a good package file (what a signed index says about it)."""
    apk = read_apk(path.read_bytes(), str(path))
    pkg = apk.package
    pkg.size = path.stat().st_size
    return pkg


def _tampered_repo(tmp: Path, fault: str) -> tuple[Path, Package]:
    repo = tmp / "repo"
    (repo / "x86_64").mkdir(parents=True)
    raw = GOOD.read_bytes()
    pkg = _record(GOOD)
    layout = read_layout(GOOD)
    if fault == "size":
        raw = raw + b"\0"
    elif fault == "datahash":
        i = layout.control_end + 20  # inside the data section's compressed bytes
        raw = raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1:]
    elif fault == "checksum":
        pkg.checksum = "Q1" + "A" * 27 + "="
    elif fault == "name":
        pkg.version = "9.9-r0"
    (repo / "x86_64" / pkg.filename).write_bytes(raw)
    pkg.repository = str(repo)
    return repo, pkg


@pytest.mark.parametrize("fault", ["size", "datahash", "checksum", "name"])
def test_fetch_faults(fetch_impl: Impl, fault: str, tmp_path: Path) -> None:
    _, pkg = _tampered_repo(tmp_path, fault)
    ref = current().get("fetch", "reference").obj
    with Fetcher(str(tmp_path / "cache-ref")) as f:
        want = _outcome(lambda: ref([pkg], "x86_64", f, None))
    with Fetcher(str(tmp_path / "cache")) as f:
        got = _outcome(lambda: fetch_impl.obj([pkg], "x86_64", f, None))
    assert got == want


def _expanded(tmp: Path, paths: list[Path]) -> list[ExpandedPackage]:
    ref = current().get("expand", "reference").obj
    by_name = ref({p.name: p for p in paths}, tmp / "expanded")
    return [by_name[p.name] for p in paths]


def _install(impl: Impl, tmp: Path, expanded: list[ExpandedPackage]) -> InstallState:
    fs = impl.obj.new_filesystem(tmp / f"root-{impl.name}")
    init_db(fs, "x86_64", [], ["/repo"], sorted(f"{e.package.name}=1-r0" for e in expanded))
    state = InstallState(fs, "x86_64", 0)
    impl.obj.install(state, expanded)
    return state


def test_install_conflict(install_impl: Impl, tmp_path: Path) -> None:
    a = _apk(tmp_path, "a", [DataEntry("etc", "dir", 0o755), DataEntry("etc/f", data=b"a\n")])
    b = _apk(tmp_path, "b", [DataEntry("etc", "dir", 0o755), DataEntry("etc/f", data=b"b\n")])
    expanded = _expanded(tmp_path, [a, b])
    want = _outcome(lambda: _install(current().get("install", "reference"), tmp_path / "r",
                                     expanded))
    got = _outcome(lambda: _install(install_impl, tmp_path / "g", expanded))
    assert got == want and "neither package replaces the other" in got[1]


def test_install_escape(install_impl: Impl, tmp_path: Path) -> None:
    """A symlink out of the root, then a file through it: refused, nothing written outside."""
    evil = _apk(tmp_path, "evil", [DataEntry("etc", "dir", 0o755),
                                   DataEntry("etc/out", "symlink", linkname="../../.."),
                                   DataEntry("etc/out/tmp/pwned", data=b"x\n")])
    expanded = _expanded(tmp_path, [evil])
    want = _outcome(lambda: _install(current().get("install", "reference"), tmp_path / "r",
                                     expanded))
    got = _outcome(lambda: _install(install_impl, tmp_path / "g", expanded))
    assert got == want
    assert not list(tmp_path.rglob("pwned"))


def test_install_same_model(install_impl: Impl, tmp_path: Path) -> None:
    pkgs = sorted((GOLDEN / "packages" / "x86_64").glob("*.apk"))
    expanded = _expanded(tmp_path, pkgs)
    ref = _install(current().get("install", "reference"), tmp_path / "r", expanded)
    got = _install(install_impl, tmp_path / "g", expanded)
    want_walk = list(ref.fs.walk())
    assert [p for p, _ in got.fs.walk()] == [p for p, _ in want_walk]
    for path, meta in want_walk:
        assert got.fs.meta[path] == meta, path
        if meta.kind == "file":
            assert got.fs.read(path) == ref.fs.read(path), path
    assert len(want_walk) > 20
