"""The reference image root: nothing escapes it, apk install rules, walk order, installed db."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from builder.apk.installed_db import FileRecord, format_record
from builder.apk.model import Package
from builder.apk.tarindex import index_tar
from builder.errors import FormatError
from builder.expand.model import ExpandedPackage
from builder.fs.disk import FsRoot
from builder.fs.kinds import CHAR, DIR
from builder.install.apkdb import init_db, write_db
from builder.install.rules import InstallState, install_package


def make_pkg(tmp_path: Path, name: str, members: list[tuple[str, str, bytes | str]],
             **fields: object) -> ExpandedPackage:
    """An expanded package from (path, kind, content-or-linkname) triples."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, kind, content in members:
            ti = tarfile.TarInfo(path)
            ti.mtime = 1234
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o2755
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, str(content)
                ti.pax_headers = {"APK-TOOLS.checksum.SHA1":
                                  hashlib.sha1(str(content).encode()).hexdigest()}
            else:
                data = content if isinstance(content, bytes) else str(content).encode()
                ti.size, ti.mode, ti.uid, ti.gid = len(data), 0o4755, 501, 20
                ti.pax_headers = {"APK-TOOLS.checksum.SHA1": hashlib.sha1(data).hexdigest()}
                tf.addfile(ti, io.BytesIO(data))
                continue
            tf.addfile(ti)
    raw = buf.getvalue()
    path = tmp_path / f"{name}.tar"
    path.write_bytes(raw)
    pkg = Package(name=name, version="1-r0", arch="x86_64", **fields)  # type: ignore[arg-type]
    return ExpandedPackage(pkg, hashlib.sha1(name.encode()).digest(), {}, [], path,
                           index_tar(raw).entries, len(raw))


def fresh(tmp_path: Path) -> InstallState:
    fs = FsRoot(tmp_path / "root")
    init_db(fs, "x86_64", [("k.rsa.pub", b"KEY")], ["/repo"], ["b=1", "a=1"])
    return InstallState(fs, "x86_64", 0)


def test_init_db_skeleton(tmp_path: Path) -> None:
    st = fresh(tmp_path)
    fs = st.fs
    assert fs.meta["tmp"].mode == 0o1777 and fs.meta["proc"].mode == 0o555
    assert fs.meta["dev/console"].kind == CHAR and fs.meta["dev/console"].mode == 0o620
    assert (fs.meta["dev/null"].devmajor, fs.meta["dev/null"].devminor) == (1, 3)
    assert fs.read("etc/apk/world") == b"a=1\nb=1\n"
    assert fs.read("etc/apk/repositories") == b"/repo\n"
    assert fs.read("usr/lib/apk/db/scripts.tar") == bytes(1024)
    assert fs.meta["usr/lib/apk/db/lock"].mode == 0o600


def test_nothing_escapes_the_root(tmp_path: Path) -> None:
    st = fresh(tmp_path)
    fs = st.fs
    for bad in ("/etc/passwd", "../outside", "etc/../../outside"):
        with pytest.raises(FormatError, match="evil"):
            install_package(st, make_pkg(tmp_path, "evil", [(bad, "file", b"x")]))
        st.packages.pop("evil", None)
    # A symlinked parent that climbs out of the root.
    fs.symlink("up", "../../..")
    with pytest.raises(FormatError, match="escapes the image root"):
        fs.write_file("up/x", b"x", who="evil")
    # An absolute symlink is resolved inside the image (chroot semantics).
    fs.mkdir("run")
    fs.symlink("var/run", "/run")
    assert fs.resolve("var/run/x") == "run/x"
    assert not (tmp_path / "outside").exists()
    assert not (tmp_path.parent.parent / "x").exists()


def test_install_rules(tmp_path: Path) -> None:
    st = fresh(tmp_path)
    fs = st.fs
    install_package(st, make_pkg(tmp_path, "a", [("etc", "dir", ""),
                                                 ("etc/f", "file", b"one"),
                                                 ("etc/same", "file", b"s")]))
    # Existing dir mode kept (etc is 0755 from InitDB; the package says 02755) but mtime set.
    assert fs.meta["etc"].mode == 0o755 and fs.meta["etc"].mtime == 1234
    # Owner flattened in the image, file special bits kept.
    m = fs.meta["etc/f"]
    assert (m.uid, m.gid, m.mode) == (0, 0, 0o4755)
    # Same content: fine, existing kept. Different content, no replaces: conflict.
    install_package(st, make_pkg(tmp_path, "b", [("etc/same", "file", b"s")]))
    with pytest.raises(FormatError, match=r"etc/f is already provided by a-1-r0"):
        install_package(st, make_pkg(tmp_path, "c", [("etc/f", "file", b"two")]))
    # New package replaces the old one: overwrite, and the old db list loses the file.
    install_package(st, make_pkg(tmp_path, "d", [("etc/f", "file", b"three")],
                                 replaces=["a"]))
    assert fs.read("etc/f") == b"three"
    assert [r.path for r in st.files["a"]] == ["etc", "etc/same"]
    write_db(st)
    db = fs.read("usr/lib/apk/db/installed").decode()
    assert "P:d\n" in db and "r:a\n" in db and "a:501:20:4755\n" in db


def test_walk_order_and_installed_db_sorting(tmp_path: Path) -> None:
    fs = FsRoot(tmp_path / "r")
    for d in ("b", "a", "a/z", "a-b"):
        fs.mkdir(d)
    fs.write_file("a/y", b"")
    fs.write_file("a/Z", b"")
    fs.mknod("a/dev", CHAR, 1, 3, 0o666)
    assert [p for p, _ in fs.walk()] == ["a", "a/Z", "a/dev", "a/y", "a/z", "a-b", "b"]
    assert fs.meta["a"].kind == DIR
    # Tar order (parents first); within usr the file moves before the subdirectory.
    recs = [FileRecord("usr", True, 0o755), FileRecord("usr/lib", True, 0o755),
            FileRecord("usr/lib/x", False, 0o644), FileRecord("usr/a", False, 0o600, 1, 2),
            FileRecord("orphan/x", False, 0o644)]
    out = format_record(Package("p", "1", checksum="Q1x"), recs).decode()
    assert out.endswith("C:Q1x\nF:usr\nR:a\na:1:2:0600\nF:usr/lib\nR:x\n\n")
    assert "i:[]\n" in out and "k:0\n" in out and "orphan" not in out
