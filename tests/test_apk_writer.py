"""The APK writer: round trips through the reader/verifier, determinism, streaming."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess

import pytest

from builder.apk.model import Package
from builder.apk.package import iter_data_tar, read_apk, verify_apk
from builder.apk.signing import Keyring, generate_key, parse_signature_member, public_pem
from builder.apk.writer import DataEntry, build_apk, entries_from_tree
from builder.deflate.gzipstream import inflate_member, split_members
from builder.errors import FormatError
from tests.helpers import require_tool

FIELDS = {
    "pkgname": ["demo"],
    "pkgver": ["1.2.3-r4"],
    "arch": ["x86_64"],
    "pkgdesc": ["a demo"],
    "builddate": ["1700000000"],
    "depend": ["so:libc.so.6", "busybox"],
    "provides": ["cmd:demo=1.2.3-r4"],
}


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, Keyring]:
    private, public = generate_key(2048)
    ring = Keyring()
    ring.add("demo.rsa.pub", public)
    return private, ring


def _entries() -> list[DataEntry]:
    return [
        DataEntry("usr", "dir", 0o755, mtime=5),
        DataEntry("usr/bin", "dir", 0o755, mtime=5),
        DataEntry("usr/bin/demo", "file", 0o4755, uid=0, gid=0, mtime=7, data=b"#!/bin/sh\n"),
        DataEntry("usr/bin/demo-link", "symlink", 0o777, linkname="demo"),
        DataEntry("usr/bin/demo-hard", "hardlink", 0o755, linkname="usr/bin/demo"),
        DataEntry(
            "usr/share/doc/" + "long-name-" * 12 + "/README",
            data=lambda: iter([b"chunk one\n", b"chunk two\n"]),
        ),
        DataEntry("etc/caf\u00e9.conf", uid=501, gid=20, data=b"x=1\n", xattrs={"user.k": b"v\0"}),
    ]


def test_round_trip(keys: tuple[bytes, Keyring]) -> None:
    private, ring = keys
    scripts = {".post-install": b"#!/bin/sh\necho hi\n", "pre-deinstall": b"#!/bin/sh\n"}
    raw = build_apk(FIELDS, _entries(), private, "demo.rsa.pub", scripts)
    apk = read_apk(raw, "demo.apk")
    report = verify_apk(apk, ring)
    assert report.signer == "demo.rsa.pub" and report.datahash_checked
    assert report.files == report.checked_files == 5
    pkg = apk.package
    assert (pkg.name, pkg.version, pkg.arch, pkg.build_time) == (
        "demo",
        "1.2.3-r4",
        "x86_64",
        1700000000,
    )
    assert pkg.depends == ["so:libc.so.6", "busybox"]
    assert pkg.installed_size == len(b"#!/bin/sh\n") + 20 + 4
    assert pkg.datahash == hashlib.sha256(apk.data).hexdigest()
    assert apk.scripts == {
        ".post-install": scripts[".post-install"],
        ".pre-deinstall": b"#!/bin/sh\n",
    }
    assert apk.script_modes == {".post-install": 0o755, ".pre-deinstall": 0o755}

    got = []
    for info, reader in iter_data_tar(apk.data):
        got.append(
            (
                info.name,
                info.type,
                info.mode,
                info.uid,
                info.gid,
                info.mtime,
                info.linkname,
                reader.read() if reader else None,
                {k: v for k, v in info.pax_headers.items() if k.startswith("SCHILY")},
            )
        )
    want = []
    for e in _entries():
        content = None
        if e.type == "file":
            content = e.data if isinstance(e.data, bytes) else b"".join(e.data())
        tflag = {"file": b"0", "hardlink": b"1", "symlink": b"2", "dir": b"5"}[e.type]
        xattrs = {f"SCHILY.xattr.{k}": v.decode() for k, v in e.xattrs.items()}
        want.append((e.path, tflag, e.mode, e.uid, e.gid, e.mtime, e.linkname, content, xattrs))
    assert got == want


def test_layout_matches_melange(keys: tuple[bytes, Keyring]) -> None:
    private, _ = keys
    raw = build_apk(FIELDS, _entries(), private, "demo.rsa.pub")
    (s0, e0), (s1, e1), (s2, e2) = split_members(raw, "demo")
    sig_tar, _ = inflate_member(raw, s0, "sig")
    assert sig_tar.startswith(b".SIGN.RSA256.demo.rsa.pub\0")
    assert len(sig_tar) == 512 + 512  # header + padded 256-byte signature, no end marker
    assert sig_tar[124:136] == b"00000000400\0"  # size 256
    control_tar, _ = inflate_member(raw, s1, "control")
    assert control_tar.startswith(b".PKGINFO\0")
    assert control_tar[-1024:] != b"\0" * 1024  # truncated
    data_tar = gzip.decompress(raw[s2:])
    assert data_tar.endswith(b"\0" * 1024) and len(data_tar) % 512 == 0
    pkginfo = control_tar[512:].split(b"\0", 1)[0].decode()
    assert f"datahash = {hashlib.sha256(raw[s2:]).hexdigest()}" in pkginfo
    assert "size = 34" in pkginfo


def test_deterministic_and_level(keys: tuple[bytes, Keyring]) -> None:
    private, ring = keys
    a = build_apk(FIELDS, _entries(), private, "demo.rsa.pub")
    assert a == build_apk(FIELDS, _entries(), private, "demo.rsa.pub")
    b = build_apk(FIELDS, _entries(), private, "demo.rsa.pub", level=1, engine="isal")
    assert a != b
    assert verify_apk(read_apk(b, "b"), ring).files == 5
    da, db = read_apk(a, "a").data, read_apk(b, "b").data
    assert gzip.decompress(da) == gzip.decompress(db)


def test_unsigned_and_package_input() -> None:
    pkg = Package(name="p", version="1-r0", arch="noarch", replaces=["q"], installed_size=999)
    apk = read_apk(build_apk(pkg, [DataEntry("f", data=b"abc")], None, ""), "p")
    assert apk.signature is None and apk.signatures == []
    assert apk.package.installed_size == 999  # explicit size kept
    assert apk.package.replaces == ["q"]
    assert verify_apk(apk, None, require_signature=False).checked_files == 1


def test_large_streamed_file(keys: tuple[bytes, Keyring]) -> None:
    private, ring = keys
    block = os.urandom(1 << 16)
    calls = []

    def chunks():
        calls.append(1)
        for i in range(160):  # 10 MiB
            yield block[i:] + block[:i]

    raw = build_apk(FIELDS, [DataEntry("big.bin", data=chunks)], private, "demo.rsa.pub")
    assert len(calls) == 2  # hashed, then written
    apk = read_apk(raw, "big")
    assert apk.package.installed_size == 160 << 16
    assert verify_apk(apk, ring).checked_files == 1


def test_one_shot_iterator_and_given_digest() -> None:
    content = b"z" * 100000
    entries = [
        DataEntry("a", data=iter([content[:10], content[10:]])),
        DataEntry("b", data=iter([content]), sha1=hashlib.sha1(content).hexdigest(), size=100000),
    ]
    apk = read_apk(build_apk(FIELDS, entries, None, ""), "it")
    assert verify_apk(apk, None, require_signature=False).checked_files == 2


@pytest.mark.parametrize(
    "entries, match",
    [
        ([DataEntry("../etc/passwd", data=b"")], "invalid path"),
        ([DataEntry("a/./b", data=b"")], "invalid path"),
        ([DataEntry("x", "hardlink", linkname="nope")], "not an earlier file"),
        ([DataEntry("x", "symlink")], "symlink without a target"),
        ([DataEntry("x", "fifo")], "unknown entry type"),
        ([DataEntry("x", data=b""), DataEntry("/x/", "dir")], "duplicate path"),
        ([DataEntry("x", data=b"abc", size=5, sha1="0" * 40)], "produced 3 bytes, expected 5"),
    ],
)
def test_invalid_entries(entries: list[DataEntry], match: str) -> None:
    with pytest.raises(FormatError, match=match):
        build_apk(FIELDS, entries, None, "")


def test_bad_scripts_and_metadata() -> None:
    with pytest.raises(FormatError, match="unknown package script '.evil'"):
        build_apk(FIELDS, [], None, "", {".evil": b""})
    with pytest.raises(FormatError, match="missing pkgver"):
        build_apk({"pkgname": ["x"]}, [], None, "")


def test_entries_from_tree(tmp_path, keys: tuple[bytes, Keyring]) -> None:
    private, ring = keys
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"binary")
    (root / "usr/bin/tool").chmod(0o755)
    os.link(root / "usr/bin/tool", root / "usr/bin/tool2")
    os.symlink("tool", root / "usr/bin/t")
    entries = entries_from_tree(str(root), mtime=0)
    assert [(e.path, e.type) for e in entries] == [
        ("usr", "dir"),
        ("usr/bin", "dir"),
        ("usr/bin/t", "symlink"),
        ("usr/bin/tool", "file"),
        ("usr/bin/tool2", "hardlink"),
    ]
    apk = read_apk(build_apk(FIELDS, entries, private, "demo.rsa.pub"), "tree")
    assert verify_apk(apk, ring).checked_files == 3
    assert apk.package.installed_size == 6


@pytest.mark.tools
def test_independent_tools_accept_written_package(tmp_path, keys: tuple[bytes, Keyring]) -> None:
    """openssl verifies the signature over the control member; GNU tar lists the whole
    package (cat of members = one tar) and gzip -t accepts it."""
    require_tool("openssl", "tar", "gzip")
    private, _ = keys
    raw = build_apk(FIELDS, _entries(), private, "demo.rsa.pub", {".post-install": b"#!/bin/sh\n"})
    apk = read_apk(raw, "demo")
    ((_, _, sig),) = parse_signature_member(apk.signature)
    (tmp_path / "pub.pem").write_bytes(public_pem(private))
    (tmp_path / "sig").write_bytes(sig)
    (tmp_path / "control.gz").write_bytes(apk.control)
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig", "control.gz"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "Verified OK" in out.stdout
    (tmp_path / "demo.apk").write_bytes(raw)
    subprocess.run(["gzip", "-t", "demo.apk"], cwd=tmp_path, check=True)
    listing = subprocess.run(
        ["tar", "-tzf", "demo.apk"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert listing[:3] == [".SIGN.RSA256.demo.rsa.pub", ".PKGINFO", ".post-install"]
    assert listing[3:] == [e.path for e in _entries()]
