"""The synthetic benchmark corpus: determinism, signatures, and the shape the builder needs."""

from __future__ import annotations

import io
import tarfile
import zlib
from pathlib import Path

import pytest
import yaml

from builder.apk.index import read_index
from builder.apk.package import read_apk, verify_apk
from builder.apk.signing import Keyring
from perf.corpus import CorpusInfo, derive_rsa_key
from perf.corpus.content import ContentGenerator
from perf.corpus.synthetic import TOP_LEVEL, generate


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small-seed7")
    generate(out, "small", seed=7)
    return out


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "corpus.json" and p.name != "apko.yaml"}


def test_same_seed_identical_bytes_other_seed_differs(small: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(again, "small", seed=7)
    a, b = _files(small), _files(again)
    assert sorted(a) == sorted(b)
    differing = [name for name in a if a[name] != b[name]]
    assert differing == []
    other = tmp_path / "other"
    generate(other, "small", seed=8)
    c = _files(other)
    go_a = next(n for n in a if n.startswith("x86_64/go-"))
    go_c = next(n for n in c if n.startswith("x86_64/go-"))
    assert a[go_a] != c[go_c]
    assert a["x86_64/APKINDEX.tar.gz"] != c["x86_64/APKINDEX.tar.gz"]


def test_index_and_every_package_verify(small: Path) -> None:
    info = CorpusInfo.load(small / "corpus.json")
    keyring = Keyring.from_paths([small / info.key_name])
    index = read_index((small / "x86_64" / "APKINDEX.tar.gz").read_bytes(), keyring, "index")
    assert index.signers == [info.key_name]
    by_name = {p.name: p for p in index.packages}
    apks = sorted((small / "x86_64").glob("*.apk"))
    assert len(apks) == len(index.packages) == len(info.packages) >= 50
    for path in apks:
        apk = read_apk(path.read_bytes(), str(path))
        report = verify_apk(apk, keyring, expected=by_name[apk.package.name])
        assert report.signer == info.key_name
        assert report.datahash_checked
        assert report.checked_files == report.files


def test_wrong_key_is_rejected(small: Path) -> None:
    from builder.errors import VerificationError
    from perf.corpus import public_pem_of

    info = CorpusInfo.load(small / "corpus.json")
    wrong = Keyring()
    wrong.add(info.key_name, public_pem_of(derive_rsa_key("someone else")))
    with pytest.raises(VerificationError):
        read_index((small / "x86_64" / "APKINDEX.tar.gz").read_bytes(), wrong, "index")


def _data_members(path: Path) -> list[tarfile.TarInfo]:
    apk = read_apk(path.read_bytes(), str(path))
    raw = zlib.decompressobj(31).decompress(apk.data)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return tf.getmembers()


def test_small_shape(small: Path) -> None:
    info = CorpusInfo.load(small / "corpus.json")
    totals = info.totals
    assert 800 <= totals["files"] <= 2500
    assert 8e6 <= totals["installed_bytes"] <= 30e6
    assert 0.25 <= totals["ratio"] <= 0.5  # realistic, neither zeros nor noise
    index = read_index((small / "x86_64" / "APKINDEX.tar.gz").read_bytes(),
                       Keyring.from_paths([small / info.key_name]), "index")
    pkgs = {p.name: p for p in index.packages}
    provided = {p.split("=")[0] for pkg in pkgs.values() for p in pkg.provides}
    # so:/cmd: provides, and every so: dependency is provided by some package.
    assert "so:libc.so.6" in provided and "cmd:go" in provided
    for pkg in pkgs.values():
        for dep in pkg.depends:
            name = dep.split("=")[0].split(">")[0].split("<")[0].split("~")[0]
            assert name in pkgs or name in provided, f"{pkg.name}: unsatisfied {dep}"
    # replaces overlap: coreutils replaces busybox (in .PKGINFO; APKINDEX has no r:) and
    # ships the same paths.
    arch = small / "x86_64"
    core_apk = read_apk(next(arch.glob("coreutils-*.apk")).read_bytes(), "coreutils")
    assert core_apk.package.replaces == ["busybox"]
    core = {m.name: m for m in _data_members(next(arch.glob("coreutils-*.apk")))}
    bb = {m.name: m for m in _data_members(next(arch.glob("busybox-*.apk")))}
    overlap = {n for n in core if not core[n].isdir()} & {n for n in bb if not bb[n].isdir()}
    assert overlap and all(bb[n].issym() and core[n].isfile() for n in overlap)
    # Shared directories, symlinks, hard links.
    git = _data_members(next(arch.glob("git-*.apk")))
    assert any(m.islnk() for m in git)
    gcc = {m.name: m for m in _data_members(next(arch.glob("gcc-*.apk")))}
    assert gcc["usr/bin/c++"].isfile() and gcc["usr/bin/g++"].islnk()
    go = _data_members(next(arch.glob("go-*.apk")))
    assert any(m.issym() and m.name == "usr/bin/go" for m in go)
    assert sum(1 for m in go if m.isfile()) >= 500
    dirs_by_pkg = [{m.name for m in _data_members(p) if m.isdir()}
                   for p in sorted(arch.glob("*.apk"))]
    assert sum("usr/lib" in d for d in dirs_by_pkg) >= 20
    # Directories come before their contents in every package.
    for p in sorted(arch.glob("*.apk")):
        seen: set[str] = set()
        for m in _data_members(p):
            parent = m.name.rsplit("/", 1)[0] if "/" in m.name else ""
            assert not parent or parent in seen, f"{p.name}: {m.name} before its directory"
            seen.add(m.name)
    assert pkgs["build-base"].installed_size == 0


def test_config_installs_top_level(small: Path) -> None:
    info = CorpusInfo.load(small / "corpus.json")
    cfg = yaml.safe_load((small / "apko.yaml").read_text())
    assert cfg["contents"]["packages"] == TOP_LEVEL
    assert cfg["contents"]["repositories"] == [str(small.resolve())]
    assert cfg["contents"]["keyring"] == [str(small.resolve() / info.key_name)]
    assert cfg["archs"] == ["x86_64"]


def test_repo_url_goes_into_config(tmp_path: Path) -> None:
    from perf.corpus import write_config

    cfg = write_config(tmp_path / "apko.yaml", "http://127.0.0.1:1234", tmp_path / "k.rsa.pub",
                       ["a", "b"])
    doc = yaml.safe_load(cfg.read_text())
    assert doc["contents"]["repositories"] == ["http://127.0.0.1:1234"]


def test_content_compressibility_is_realistic() -> None:
    gen = ContentGenerator(3)
    for kind, low, high in (("go", 0.18, 0.35), ("c", 0.18, 0.38), ("elf", 0.33, 0.55),
                            ("noise", 0.99, 1.01)):
        data = b"".join(gen.make(kind, 100_000) for _ in range(5))
        ratio = len(zlib.compress(data, 6)) / len(data)
        assert low <= ratio <= high, (kind, ratio)
    elf = gen.make("so", 50_000, soname="libdemo.so.3")
    assert elf[:4] == b"\x7fELF" and b"libdemo.so.3\0" in elf


def test_derived_key_is_deterministic_and_valid() -> None:
    from builder.apk.signing import sign
    from perf.corpus import public_pem_of

    a, b = derive_rsa_key("x"), derive_rsa_key("x")
    assert a == b and a != derive_rsa_key("y")
    ring = Keyring()
    ring.add("k.rsa.pub", public_pem_of(a))
    assert ring.verify("k.rsa.pub", "sha256", b"msg", sign(a, b"msg", "sha256"))
