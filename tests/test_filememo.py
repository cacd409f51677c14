"""Results kept per process while their files are unchanged (builder/util/filememo.py), what
uses them (package verification, quick expansion loads), and the kernel file copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.errors import VerificationError
from builder.util import filememo
from builder.util.atomic import copy_file_into
from builder.util.filememo import FileMemo


@pytest.fixture
def no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files made by the test count as settled at once (the rule itself is tested below)."""
    monkeypatch.setattr(filememo, "SETTLE_NS", 0)


def test_a_result_is_kept_while_its_files_are_unchanged(tmp_path: Path, no_settle: None) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    memo: FileMemo[str] = FileMemo()
    got, snap = memo.get("k", (a, b))
    assert got is None
    memo.put(snap, "result")
    assert memo.get("k", (a, b))[0] == "result"
    assert memo.get("other key", (a, b))[0] is None
    st = b.stat()
    b.write_bytes(b"TWO")  # same size, mtime put back: the ctime still moves
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert memo.get("k", (a, b))[0] is None
    b.unlink()
    assert memo.get("k", (a, b))[0] is None


def test_a_file_changed_during_the_computation_is_not_kept(tmp_path: Path,
                                                            no_settle: None) -> None:
    a = tmp_path / "a"
    a.write_bytes(b"one")
    memo: FileMemo[str] = FileMemo()
    _, snap = memo.get("k", (a,))
    a.write_bytes(b"changed")
    memo.put(snap, "made from the old bytes")
    assert memo.get("k", (a,))[0] is None


def test_files_changed_within_the_settle_time_are_not_kept(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_bytes(b"fresh")
    memo: FileMemo[str] = FileMemo()
    _, snap = memo.get("k", (a,))
    memo.put(snap, "x")
    assert memo.get("k", (a,))[0] is None  # a write in the same tick could hide


def test_the_memo_is_bounded(tmp_path: Path, no_settle: None) -> None:
    memo: FileMemo[int] = FileMemo(limit=3)
    a = tmp_path / "a"
    a.write_bytes(b"")
    for i in range(4):
        memo.put(memo.get(i, (a,))[1], i)
    assert memo.get(3, (a,))[0] == 3
    assert [memo.get(i, (a,))[0] for i in range(3)] == [None, None, None]


def test_a_verified_package_is_checked_again_once_changed(tmp_path: Path, no_settle: None,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import shutil

    from builder.apk.layout import read_layout, read_pkginfo
    from builder.apk.pkginfo import pkginfo_to_package
    from builder.repo import verify
    from builder.util.checksums import q1
    from tests.helpers import GOLDEN

    apk = tmp_path / "p.apk"
    shutil.copyfile(GOLDEN / "packages" / "x86_64" / "pretend-baselayout-1.0.0-r0.apk", apk)
    layout = read_layout(apk)
    pkg = pkginfo_to_package(read_pkginfo(layout)[0], "p")
    pkg.size, pkg.checksum = apk.stat().st_size, q1(layout.control_sha1)
    hashed = []
    real_sha256 = verify.hashlib.sha256
    monkeypatch.setattr(verify.hashlib, "sha256", lambda *a: hashed.append(1) or real_sha256(*a))
    verify.verify_package_fast(apk, pkg)
    verify.verify_package_fast(apk, pkg)
    assert len(hashed) == 1  # the second check is the memo's
    data = bytearray(apk.read_bytes())
    data[-30] ^= 0xFF  # inside the data section's compressed bytes
    st = apk.stat()
    apk.write_bytes(bytes(data))
    os.utime(apk, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(VerificationError):
        verify.verify_package_fast(apk, pkg)


def test_copy_file_into_appends_the_whole_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 << 20) + b"tail")
    dst = tmp_path / "dst"
    with open(dst, "wb") as f:
        f.write(b"head")
        assert copy_file_into(src, f) == src.stat().st_size
        f.write(b"!")
    assert dst.read_bytes() == b"head" + src.read_bytes() + b"!"
