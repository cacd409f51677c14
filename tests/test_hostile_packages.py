"""Hostile packages and indexes (issue 13): each real hostile file, signed with the test's own
key so the signature checks pass and the check behind them is reached, is refused with one
`apkimage: error:` line naming the file, the package and the field — or, where apk-tools and
apko accept it (devices, fifos, setuid files, long and non-UTF-8 names, duplicate entries,
contiguous files, dependency cycles), gives the right image. After a refusal nothing is left
outside the cache, and the same cache gives the right image on the next, good build. Every
case runs in each profile (reference, fast, stitched)."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import pytest

from builder.apk.signing import generate_key, sign, signature_member
from builder.deflate.gzipstream import gzip_member, split_members
from builder.gotar import END_MARKER, file_entry
from tests.helpers import (
    apk_sections,
    build_in_process,
    hostile_apk,
    hostile_repo,
    index_record,
    layout_tree,
    refused,
    tar_entry,
    tree_state,
)

IMPLS = ["reference", "fast", "stitched"]
USR = tar_entry("usr", "5", mode=0o755)
GOOD = USR + tar_entry("usr/good", data=b"good\n")


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def other_key() -> tuple[bytes, bytes]:
    return generate_key(2048)


def argv(cfg: Path, tmp: Path, impl: str, *extra: str) -> list[str]:
    return ["build", str(cfg), "t:latest", str(tmp / "out"), "--cache-dir", str(tmp / "cache"),
            "--impl", impl, *extra]


def build_refused(capsys: pytest.CaptureFixture[str], tmp: Path, cfg: Path, impl: str,
                  *extra: str) -> str:
    """The build fails cleanly, writes no output and leaves everything but the cache as it
    was (no image root, work directory or temp file outside it)."""
    before = tree_state(tmp, skip=(tmp / "cache",))
    line = refused(capsys, argv(cfg, tmp, impl, *extra))
    assert not (tmp / "out").exists()
    assert tree_state(tmp, skip=(tmp / "cache",)) == before
    return line


def assert_cache_good(tmp: Path, key: tuple[bytes, bytes], impl: str,
                      name: str = "evil") -> None:
    """The repository now serves a good package of the same name: the cache the refused
    build used gives the image a fresh cache gives."""
    cfg = hostile_repo(tmp, {f"{name}-1.0-r0.apk": hostile_apk(name, GOOD, key)}, key, [name])
    used, _ = build_in_process(cfg, tmp / "cache", impl, tmp / "w1")
    fresh, _ = build_in_process(cfg, tmp / "fresh-cache", impl, tmp / "w2")
    assert used["manifests"] == fresh["manifests"]


def build_ok(tmp: Path, cfg: Path, impl: str) -> dict:
    from builder.cli import main

    assert main(argv(cfg, tmp, impl)) == 0
    return layout_tree(tmp / "out")


def one_package(tmp: Path, key: tuple[bytes, bytes], body: bytes, name: str = "evil",
                **kw: object) -> tuple[Path, Path]:
    apk = hostile_apk(name, body, key, **kw)
    cfg = hostile_repo(tmp, {f"{name}-1.0-r0.apk": apk}, key, [name])
    return cfg, tmp / "repo" / "x86_64" / f"{name}-1.0-r0.apk"


# ------------------------------------------------------------------------ package content: refused

OUTSIDE = "../../../../../../../../../../outside"
REFUSED_CONTENT = {
    "dotdot": (tar_entry("../evil", data=b"x"), "path '../evil' contains '..'"),
    "absolute": (tar_entry("/etc/evil", data=b"x"), "absolute path '/etc/evil'"),
    "dot-a-dotdot": (tar_entry("./a/../../x", data=b"x"), "path 'a/../../x' contains '..'"),
    "symlink-out-then-file": (USR + tar_entry("usr/l", "2", linkname=OUTSIDE)
                              + tar_entry("usr/l/evil", data=b"x"),
                              "path 'usr/l/evil' escapes the image root"),
    "absolute-symlink-up": (USR + tar_entry("usr/l", "2", linkname="/../../outside")
                            + tar_entry("usr/l/evil", data=b"x"),
                            "path 'usr/l/evil' escapes the image root"),
    "symlink-chain-out": (USR + tar_entry("usr/a", "2", linkname="b")
                          + tar_entry("usr/b", "2", linkname="c")
                          + tar_entry("usr/c", "2", linkname="../..")
                          + tar_entry("usr/a/evil", data=b"x"),
                          "path 'usr/a/evil' escapes the image root"),
    "symlink-loop": (USR + tar_entry("usr/a", "2", linkname="b")
                     + tar_entry("usr/b", "2", linkname="a")
                     + tar_entry("usr/a/evil", data=b"x"),
                     "too many levels of symlinks resolving 'usr/a/evil'"),
    "hardlink-out": (USR + tar_entry("usr/h", "1", linkname="../etc/passwd"),
                     "path '../etc/passwd' contains '..'"),
    "hardlink-absolute": (USR + tar_entry("usr/h", "1", linkname="/etc/passwd"),
                          "absolute path '/etc/passwd'"),
    "hardlink-not-yet-seen": (USR + tar_entry("usr/h", "1", linkname="usr/later")
                              + tar_entry("usr/later", data=b"x"),
                              "hardlink 'usr/h' -> 'usr/later': target is not a file"),
    "component-too-long": (USR + tar_entry("usr/" + "n" * 300, data=b"x"),
                           "component 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn'... of 300 "
                           "bytes is too long"),
    "path-too-long": (USR + tar_entry("usr/" + "d/" * 2100 + "f", data=b"x"),
                      "of 4205 bytes is too long"),
    "symlink-target-too-long": (USR + tar_entry("usr/l", "2", linkname="x/" * 2100),
                                "symlink 'usr/l': target of 4200 bytes is too long"),
    "malformed-checksum": (USR + tar_entry("usr/f", data=b"x", checksum="nothex"),
                           "usr/f: malformed APK-TOOLS.checksum.SHA1 'nothex'"),
    "file-sha1-wrong": (USR + tar_entry("usr/f", data=b"real", checksum="0" * 40),
                        "usr/f: content SHA-1 " + hashlib.sha1(b"real").hexdigest()
                        + " does not match APK-TOOLS.checksum.SHA1 " + "0" * 40),
    # typeflag 7 (contiguous) installs as a regular file: its SHA-1 is checked as one's
    "contiguous-sha1-wrong": (USR + tar_entry("usr/c", "7", data=b"real", checksum="1" * 40),
                              "usr/c: content SHA-1 " + hashlib.sha1(b"real").hexdigest()
                              + " does not match APK-TOOLS.checksum.SHA1 " + "1" * 40),
    "entry-declares-huge-size": (USR + tar_entry("usr/big", data=b"", size=1 << 40,
                                                 checksum=False),
                                 "tar entry 'usr/big' at byte 1536 declares 1099511627776 "
                                 "bytes and runs past the end of the archive"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_CONTENT))
def test_content_refused(case: str, impl: str, tmp_path: Path,
                         signing_key: tuple[bytes, bytes],
                         capsys: pytest.CaptureFixture[str]) -> None:
    body, words = REFUSED_CONTENT[case]
    (tmp_path / "outside").mkdir()
    cfg, apk = one_package(tmp_path, signing_key, body)
    line = build_refused(capsys, tmp_path, cfg, impl)
    assert words in line, line
    assert "evil-1.0-r0" in line and str(apk) in line, line
    assert not any((tmp_path / "outside").iterdir())
    assert_cache_good(tmp_path, signing_key, impl)


def test_directory_replaced_by_symlink(impl: str, tmp_path: Path,
                                       signing_key: tuple[bytes, bytes],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A later package with a symlink where an earlier one made a directory: apk cannot
    extract it (EISDIR) and neither does the builder; the error names both packages."""
    first = hostile_apk("aaa", USR + tar_entry("usr/x", "5", mode=0o755)
                        + tar_entry("usr/x/f", data=b"f"), signing_key)
    later = hostile_apk("zzz", USR + tar_entry("usr/x", "2", linkname="/tmp"), signing_key,
                        fields={"depend": ["aaa"]})
    cfg = hostile_repo(tmp_path, {"aaa-1.0-r0.apk": first, "zzz-1.0-r0.apk": later},
                       signing_key, ["zzz"])
    line = build_refused(capsys, tmp_path, cfg, impl)
    assert "zzz-1.0-r0 (" in line and "zzz-1.0-r0.apk): usr/x is a directory in the image " \
        "(from aaa-1.0-r0), the package has a symlink there" in line, line
    assert_cache_good(tmp_path, signing_key, impl)


# ------------------------------------------------------------------------ package content: kept


def test_devices_fifos_setuid_kept(impl: str, tmp_path: Path,
                                   signing_key: tuple[bytes, bytes]) -> None:
    """apk-tools mknods devices and fifos and keeps setuid/setgid bits (fs_fsys.c); apko
    keeps them in the layer: so does the builder, owned 0:0."""
    body = (tar_entry("dev", "5", mode=0o755)
            + tar_entry("dev/mydev", "3", mode=0o666, devmajor=10, devminor=200)
            + tar_entry("dev/mydisk", "4", mode=0o660, devmajor=8, devminor=1)
            + tar_entry("dev/pipe", "6", mode=0o620)
            + USR + tar_entry("usr/su", data=b"#!su\n", mode=0o4755)
            + tar_entry("usr/sg", data=b"#!sg\n", mode=0o2711))
    cfg, _ = one_package(tmp_path, signing_key, body)
    tree = build_ok(tmp_path, cfg, impl)
    got = {p: (ti.type, ti.mode, ti.devmajor, ti.devminor, ti.uid, ti.gid, data)
           for p, (ti, data) in tree.items() if p in ("dev/mydev", "dev/mydisk", "dev/pipe",
                                                      "usr/su", "usr/sg")}
    assert got == {
        "dev/mydev": (b"3", 0o666, 10, 200, 0, 0, b""),
        "dev/mydisk": (b"4", 0o660, 8, 1, 0, 0, b""),
        "dev/pipe": (b"6", 0o620, 0, 0, 0, 0, b""),
        "usr/su": (b"0", 0o4755, 0, 0, 0, 0, b"#!su\n"),
        "usr/sg": (b"0", 0o2711, 0, 0, 0, 0, b"#!sg\n"),
    }


def test_long_and_non_utf8_names_kept(impl: str, tmp_path: Path,
                                      signing_key: tuple[bytes, bytes]) -> None:
    """PAX and GNU long names within Linux's limits, and names that are not UTF-8 (apk and
    Go's archive/tar take names as bytes), install and reach the layer unchanged."""
    deep = "usr/" + "/".join(["d" * 100] * 3)
    gnu = "usr/" + "g" * 200
    body = USR
    for i in range(1, 4):
        body += tar_entry("usr/" + "/".join(["d" * 100] * i), "5", mode=0o755)
    body += tar_entry(deep + "/pax-file", data=b"pax\n")
    body += tar_entry("././@LongLink", "L", data=gnu.encode() + b"\0", checksum=False)
    body += tar_entry(gnu[:100], data=b"gnu\n")
    body += tar_entry(b"usr/\xff\xfe-latin", data=b"bytes\n")
    cfg, _ = one_package(tmp_path, signing_key, body)
    tree = build_ok(tmp_path, cfg, impl)
    assert tree[deep + "/pax-file"][1] == b"pax\n"
    assert tree[gnu][1] == b"gnu\n"
    assert tree["usr/\udcff\udcfe-latin"][1] == b"bytes\n"
    db = tree["usr/lib/apk/db/installed"][1]
    assert b"R:\xff\xfe-latin\n" in db and b"R:" + b"g" * 200 + b"\n" in db


def test_duplicate_entries_last_wins(impl: str, tmp_path: Path,
                                     signing_key: tuple[bytes, bytes]) -> None:
    """A data tar holding a path twice: apk extracts both, the last wins (the first is
    unlinked), and the installed db lists the path once."""
    body = USR + tar_entry("usr/f", data=b"one\n") + tar_entry("usr/f", data=b"second\n")
    cfg, _ = one_package(tmp_path, signing_key, body)
    tree = build_ok(tmp_path, cfg, impl)
    assert tree["usr/f"][1] == b"second\n"
    db = tree["usr/lib/apk/db/installed"][1]
    assert db.count(b"R:f\n") == 1
    assert b"Z:Q1" + base64.b64encode(hashlib.sha1(b"second\n").digest()) in db


def test_contiguous_file_installs_as_regular(impl: str, tmp_path: Path,
                                             signing_key: tuple[bytes, bytes]) -> None:
    cfg, _ = one_package(tmp_path, signing_key, USR + tar_entry("usr/c", "7", data=b"contig\n"))
    ti, data = build_ok(tmp_path, cfg, impl)["usr/c"]
    assert (ti.type, data) == (b"0", b"contig\n")


# ------------------------------------------------------------------------------- verification


def test_wrong_datahash(impl: str, tmp_path: Path, signing_key: tuple[bytes, bytes],
                        capsys: pytest.CaptureFixture[str]) -> None:
    sig, control, _ = apk_sections("evil", GOOD, signing_key)
    other = gzip_member(USR + tar_entry("usr/good", data=b"evil\n") + END_MARKER)
    apk = sig + control + other
    cfg = hostile_repo(tmp_path, {"evil-1.0-r0.apk": apk}, signing_key, ["evil"])
    line = build_refused(capsys, tmp_path, cfg, impl)
    path = tmp_path / "repo" / "x86_64" / "evil-1.0-r0.apk"
    assert "evil-1.0-r0: datahash mismatch: .PKGINFO says " in line, line
    assert f"data section of {path} hashes to {hashlib.sha256(other).hexdigest()}" in line
    assert_cache_good(tmp_path, signing_key, impl)


@pytest.mark.parametrize("field", ["checksum", "size"])
def test_index_record_mismatch(field: str, impl: str, tmp_path: Path,
                               signing_key: tuple[bytes, bytes],
                               capsys: pytest.CaptureFixture[str]) -> None:
    """The file is not what the signed index lists: another `C:` (control SHA-1) or `S:`."""
    sig, control, data = apk_sections("evil", GOOD, signing_key)
    apk = sig + control + data
    record = index_record("evil", "1.0-r0", apk, control)
    if field == "checksum":
        record.checksum = "Q1" + "A" * 27 + "="
    else:
        record.size = len(apk) + 1
    cfg = hostile_repo(tmp_path, {"evil-1.0-r0.apk": apk}, signing_key, ["evil"],
                       records=[record])
    line = build_refused(capsys, tmp_path, cfg, impl)
    path = tmp_path / "repo" / "x86_64" / "evil-1.0-r0.apk"
    if field == "checksum":
        assert f"evil-1.0-r0: control checksum mismatch: index has C:{record.checksum}, " \
            f"{path} has Q1" in line, line
    else:
        assert f"evil-1.0-r0: {path} is {len(apk)} bytes, the index says S:{len(apk) + 1}" \
            in line, line
    assert_cache_good(tmp_path, signing_key, impl)


def _signed_index(text: str, key: tuple[bytes, bytes] | None,
                  key_name: str = "local.rsa.pub") -> bytes:
    body = gzip_member(file_entry("DESCRIPTION", b"") + file_entry("APKINDEX", text.encode())
                       + END_MARKER)
    if key is None:
        return body
    return signature_member(key_name, sign(key[0], body, "sha256")) + body


@pytest.mark.parametrize("signer", ["unknown-key", "wrong-key-same-name", "unsigned"])
def test_index_signature(signer: str, impl: str, tmp_path: Path,
                         signing_key: tuple[bytes, bytes], other_key: tuple[bytes, bytes],
                         capsys: pytest.CaptureFixture[str]) -> None:
    apk = hostile_apk("evil", GOOD, signing_key)
    from builder.apk.index import format_index, index_record_from_apk
    from builder.apk.package import read_apk

    text = format_index([index_record_from_apk(read_apk(apk, "evil"), len(apk))])
    index = {"unknown-key": _signed_index(text, other_key, "other.rsa.pub"),
             "wrong-key-same-name": _signed_index(text, other_key),
             "unsigned": _signed_index(text, None)}[signer]
    cfg = hostile_repo(tmp_path, {"evil-1.0-r0.apk": apk}, signing_key, ["evil"],
                       index=index)
    line = build_refused(capsys, tmp_path, cfg, impl)
    where = f"{tmp_path / 'repo' / 'x86_64' / 'APKINDEX.tar.gz'}: "
    assert where + {
        "unknown-key": "index signature: no trusted key (signed by other.rsa.pub)",
        "wrong-key-same-name": "index signature mismatch: the signature by local.rsa.pub "
                               "does not verify",
        "unsigned": "index is not signed"}[signer] in line, line
    assert_cache_good(tmp_path, signing_key, impl)


def test_missing_key_file(impl: str, tmp_path: Path, signing_key: tuple[bytes, bytes],
                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = one_package(tmp_path, signing_key, GOOD)
    (tmp_path / "local.rsa.pub").unlink()
    line = build_refused(capsys, tmp_path, cfg, impl)
    assert f"keyring {tmp_path / 'local.rsa.pub'}: cannot read" in line, line
    assert_cache_good(tmp_path, signing_key, impl)


@pytest.mark.parametrize("signer", ["unknown-key", "unsigned"])
def test_package_signature(signer: str, impl: str, tmp_path: Path,
                           signing_key: tuple[bytes, bytes], other_key: tuple[bytes, bytes],
                           capsys: pytest.CaptureFixture[str]) -> None:
    """A package signed by a key outside the keyring, or not signed: apk and apko trust a
    package through the signed index and its `C:`, so a solved build installs it; a
    --lockfile build (no index) and `apkimage verify` check the package's own signature
    and refuse it, naming the key."""
    from builder.cli import main

    key = other_key if signer == "unknown-key" else None
    cfg, apk = one_package(tmp_path, signing_key, GOOD)  # (the repository's key: local.rsa.pub)
    apk.write_bytes(hostile_apk("evil", GOOD, key, key_name="other.rsa.pub"))
    cfg = hostile_repo(tmp_path, {apk.name: apk.read_bytes()}, signing_key, ["evil"])
    assert build_ok(tmp_path, cfg, impl)["usr/good"][1] == b"good\n"
    shutil.rmtree(tmp_path / "out")
    lock = tmp_path / "apko.lock.json"
    assert main(["lock", str(cfg), "-o", str(lock), "--cache-dir",
                 str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    line = build_refused(capsys, tmp_path, cfg, impl, "--lockfile", str(lock))
    assert "evil" in line and "1.0-r0" in line, line
    assert ("no trusted key (signed by other.rsa.pub)" if key is not None
            else "not signed") in line, line
    line = refused(capsys, ["verify", str(apk), "--keyring", str(tmp_path / "local.rsa.pub")])
    assert "evil-1.0-r0: package " in line and ("no trusted key (signed by other.rsa.pub)"
                                                if key is not None else "is not signed") \
        in line, line


# ----------------------------------------------------------------- truncated and corrupt gzip


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def _gzip_cases() -> dict[str, tuple[str, str]]:
    """case -> (what is done, the words of the error)."""
    return {
        "empty-file": ("file", "too short to be an .apk (0 bytes)"),
        "cut-in-signature": ("file", "truncated gzip member at byte 0"),
        "cut-after-signature": ("file", "signed package without control and data sections"),
        "cut-in-control": ("file", "truncated gzip member at byte SIG"),
        "cut-after-control": ("file", "no data section after the control section"),
        "signature-magic": ("file", "not a gzip member at byte 0"),
        "signature-deflate": ("file", "corrupt gzip member at byte 0"),
        "control-magic": ("file", "not a gzip member at byte SIG"),
        "control-deflate": ("file", "corrupt gzip member at byte SIG"),
        "control-crc": ("file", "corrupt gzip member at byte SIG"),
        "cut-in-data": ("data", "truncated gzip member"),
        "cut-in-last-trailer": ("data", "truncated gzip member"),
        "cut-in-second-data-member": ("data", "truncated gzip member"),
        # (the stitched profile's block scan words these as zlib does)
        "data-magic-second-member": ("data", "not a gzip member|incorrect header check"),
        "data-deflate": ("data", "corrupt gzip"),
        "data-crc": ("data", "corrupt gzip member|incorrect data check"),
        "garbage-after-data": ("data", "not a gzip member|incorrect header check"),
    }


@pytest.mark.parametrize("case", sorted(_gzip_cases()))
def test_gzip_member_boundaries(case: str, impl: str, tmp_path: Path,
                                signing_key: tuple[bytes, bytes],
                                capsys: pytest.CaptureFixture[str]) -> None:
    """Every member of an .apk cut short or damaged, at and between member boundaries. A
    damaged data section keeps a matching datahash (the control is made for it), so the
    gzip reader behind the fetch checks is what refuses it; a damaged signature or control
    member is listed in the index as it is."""
    kind, words = _gzip_cases()[case]
    body = USR + tar_entry("usr/f", data=bytes(range(256)) * 40)
    two = gzip_member(body) + gzip_member(END_MARKER)  # a two-member data section
    sig, control, data = apk_sections("evil", body, signing_key, data=two)
    if kind == "data":
        first_end = split_members(two, "data")[0][1]
        mangled = {
            "cut-in-data": two[:first_end // 2],
            "cut-in-last-trailer": two[:-4],
            "cut-in-second-data-member": two[:first_end + 12],
            "data-magic-second-member": _flip(two, first_end),
            "data-deflate": _flip(two, 40),
            "data-crc": _flip(two, first_end - 6),
            "garbage-after-data": two + b"garbage!",
        }[case]
        sig, control, data = apk_sections("evil", body, signing_key, data=mangled)
        apk = sig + control + data
    else:
        whole = sig + control + data
        s, c = len(sig), len(sig) + len(control)
        apk = {
            "empty-file": b"",
            "cut-in-signature": whole[:s // 2],
            "cut-after-signature": whole[:s],
            "cut-in-control": whole[:s + len(control) // 2],
            "cut-after-control": whole[:c],
            "signature-magic": _flip(whole, 0),
            "signature-deflate": _flip(whole, 20),
            "control-magic": _flip(whole, s),
            "control-deflate": _flip(whole, s + 20),
            "control-crc": _flip(whole, c - 6),
        }[case]
        control = apk[s:c] if len(apk) >= c else control
    record = index_record("evil", "1.0-r0", apk, control)
    cfg = hostile_repo(tmp_path, {"evil-1.0-r0.apk": apk}, signing_key, ["evil"],
                       records=[record])
    line = build_refused(capsys, tmp_path, cfg, impl)
    path = tmp_path / "repo" / "x86_64" / "evil-1.0-r0.apk"
    assert any(w.replace("SIG", str(len(sig))) in line for w in words.split("|")), line
    assert str(path) in line, line
    assert_cache_good(tmp_path, signing_key, impl)


# -------------------------------------------------------------------------- indexes and names

INDEX_LINES = {
    "no-colon": ("C:Q1x\nP:evil\nV:1.0-r0\ngarbage\n", ":4: malformed index line 'garbage'"),
    "unknown-upper-field": ("P:evil\nV:1.0-r0\nZ:what\n", ":3: unknown index field Z:"),
    "size-not-integer": ("P:evil\nV:1.0-r0\nS:lots\n", ":3: field S: is not an integer: 'lots'"),
    "record-without-version": ("P:evil\nA:x86_64\n", ":1: index record without P: or V:"),
    "name-with-slash": ("P:../../evil\nV:1.0-r0\n", ":1: P: '../../evil' holds '/'"),
    "name-dotdot": ("P:..\nV:1.0-r0\n", ":1: P: '..' is a path component"),
    "version-with-slash": ("P:evil\nV:1.0/../../x\n", ":1: V: '1.0/../../x' holds '/'"),
}


@pytest.mark.parametrize("case", sorted(INDEX_LINES))
def test_malformed_index(case: str, impl: str, tmp_path: Path,
                         signing_key: tuple[bytes, bytes],
                         capsys: pytest.CaptureFixture[str]) -> None:
    text, words = INDEX_LINES[case]
    cfg = hostile_repo(tmp_path, {}, signing_key, ["evil"],
                       index=_signed_index(text + "\n", signing_key))
    line = build_refused(capsys, tmp_path, cfg, impl)
    where = f"{tmp_path / 'repo' / 'x86_64' / 'APKINDEX.tar.gz'}:APKINDEX"
    assert where + words in line, line
    assert_cache_good(tmp_path, signing_key, impl)


@pytest.mark.parametrize("field,value,words", [
    ("pkgname", "a/b", "pkgname 'a/b' holds '/'"),
    ("pkgname", "..", "pkgname '..' is a path component"),
    ("pkgver", "1.0-r0/..", "pkgver '1.0-r0/..' holds '/'"),
])
def test_pkginfo_name_refused(field: str, value: str, words: str, impl: str,
                              tmp_path: Path, signing_key: tuple[bytes, bytes],
                              capsys: pytest.CaptureFixture[str]) -> None:
    """The index lists `evil`; the package's own .PKGINFO names a path instead."""
    sig, control, data = apk_sections("evil", GOOD, signing_key, fields={field: [value]})
    apk = sig + control + data
    cfg = hostile_repo(tmp_path, {"evil-1.0-r0.apk": apk}, signing_key, ["evil"],
                       records=[index_record("evil", "1.0-r0", apk, control)])
    line = build_refused(capsys, tmp_path, cfg, impl)
    path = tmp_path / "repo" / "x86_64" / "evil-1.0-r0.apk"
    assert f"{path}:.PKGINFO: {words}" in line, line
    assert_cache_good(tmp_path, signing_key, impl)


def test_dependency_cycle_installs(impl: str, tmp_path: Path,
                                   signing_key: tuple[bytes, bytes]) -> None:
    """a -> b -> c -> a: apk installs a cycle (in some order); so does the builder."""
    apks = {f"{n}-1.0-r0.apk": hostile_apk(n, USR + tar_entry(f"usr/{n}", data=n.encode()),
                                           signing_key, fields={"depend": [d]})
            for n, d in (("a", "b"), ("b", "c"), ("c", "a"))}
    cfg = hostile_repo(tmp_path, apks, signing_key, ["a"])
    tree = build_ok(tmp_path, cfg, impl)
    assert [tree[f"usr/{n}"][1] for n in "abc"] == [b"a", b"b", b"c"]
    db = tree["usr/lib/apk/db/installed"][1]
    assert sorted(ln for ln in db.split(b"\n") if ln.startswith(b"P:")) == [b"P:a", b"P:b",
                                                                          b"P:c"]


def test_unsatisfiable_world(impl: str, tmp_path: Path, signing_key: tuple[bytes, bytes],
                             capsys: pytest.CaptureFixture[str]) -> None:
    apk = hostile_apk("evil", GOOD, signing_key, fields={"depend": ["libmissing>=2"]})
    cfg = hostile_repo(tmp_path, {"evil-1.0-r0.apk": apk}, signing_key, ["evil"])
    line = build_refused(capsys, tmp_path, cfg, impl)
    assert "libmissing" in line and "evil" in line, line
    assert_cache_good(tmp_path, signing_key, impl)
