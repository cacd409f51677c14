"""Fuzz targets, one per parser of untrusted bytes: the gzip member splitter (and the DEFLATE
block scan that splits members in the fast path), the tar header index, `.PKGINFO` (as text,
as a control tar and inside a whole `.apk`), APKINDEX (text and the signed `.tar.gz`), apk
versions and constraints, and the image config loader.

Each target feeds arbitrary bytes and structure-aware mutations of real inputs (the packages
and indexes of ../shared/apk-fixtures: bytes flipped, ranges cut, duplicated or spliced from
another seed, gzip members dropped, reordered or re-wrapped with other header flags, the tar
inside a member changed field by field with its checksum fixed so the parser reads on) and
asserts the parser either returns a valid result or raises an ApkImageError whose message is
one line naming the input. Anything else — IndexError, ValueError, UnicodeDecodeError,
RecursionError, MemoryError, an example running past EXAMPLE_TIMEOUT — is a crash.

Budget: under `make test` each target runs the `fuzz-ci` profile (a few dozen examples, a
second or two); `make fuzz` sets FUZZ_SECONDS and each target then runs rounds of the `fuzz`
profile until that many seconds have passed, printing how many inputs it tried. Inputs that
crashed a parser once are pinned with `@example` (the regression tests).
"""

from __future__ import annotations

import io
import os
import signal
import struct
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from builder.apk.index import read_index
from builder.apk.layout import read_control, read_layout
from builder.apk.model import Package, parse_index_text
from builder.apk.package import read_apk, verify_apk
from builder.apk.pkginfo import parse_pkginfo, pkginfo_to_package
from builder.apk.signing import Keyring
from builder.apk.tarindex import TarIndex, index_tar
from builder.apk.version import compare_versions, is_valid_version, parse_constraint
from builder.config import load_config
from builder.deflate.block_index import scan_blocks
from builder.deflate.gzipstream import inflate_member, iter_inflate, split_members
from builder.errors import ApkImageError
from tests.helpers import FIXTURES, GOLDEN, KEYS

FUZZ_SECONDS = float(os.environ.get("FUZZ_SECONDS") or 0)
EXAMPLE_TIMEOUT = 10.0  # seconds one input may take before it counts as a hang
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
          HealthCheck.large_base_example]
settings.register_profile("fuzz-ci", max_examples=200, deadline=None,
                          suppress_health_check=_QUIET)
settings.register_profile("fuzz", max_examples=250, deadline=None,
                          suppress_health_check=_QUIET)
PROFILE = settings.get_profile("fuzz" if FUZZ_SECONDS else "fuzz-ci")

SOURCE = "fuzz-input"  # the name every parser is given: its errors must carry it
_counts: dict[str, int] = {}


# ------------------------------------------------------------------------------------ harness

class Hang(Exception):
    """An input took longer than EXAMPLE_TIMEOUT (not an ApkImageError: a crash)."""


@contextmanager
def _watchdog(seconds: float = EXAMPLE_TIMEOUT) -> Iterator[None]:
    """Raise Hang in the parser when one input runs too long (main thread only: SIGALRM)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"input still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def outcome(target: str, fn: Callable[..., Any], *args: Any, source: str = SOURCE) -> Any:
    """`fn(*args)`, or None when it refused the input with a proper error: an ApkImageError
    whose message is one non-empty line naming `source`. Any other exception propagates
    (hypothesis reports it, shrunk, as the crash)."""
    _counts[target] = _counts.get(target, 0) + 1
    try:
        with _watchdog():
            return fn(*args)
    except ApkImageError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"not a one-line message: {message!r}"
        assert source in message, f"message does not name the input: {message!r}"
        return None


def fuzz(name: str, *runs: Callable[[], None]) -> None:
    """One round of each of the target's entry points (`make test`), or rounds of them in
    turn until FUZZ_SECONDS have passed (`make fuzz`)."""
    _counts[name] = 0
    start = time.monotonic()
    for run in runs:
        run()
    while FUZZ_SECONDS and time.monotonic() - start < FUZZ_SECONDS:
        for run in runs:
            run()
    if FUZZ_SECONDS:
        print(f"\nfuzz {name}: {_counts[name]} inputs in {time.monotonic() - start:.1f} s, "
              "no crash")


# --------------------------------------------------------------------------- seeds, mutations

APK_FILES = sorted((FIXTURES / "apk").rglob("*.apk"), key=lambda p: p.stat().st_size)
SMALL_INDEXES = [FIXTURES / "indexes" / n for n in (
    "melange-local-4-x86_64-rsa256.APKINDEX.tar.gz",
    "chainguard-excerpt-16-aarch64-3sigs.APKINDEX.tar.gz",
    "wolfi-excerpt-47-x86_64.APKINDEX.tar.gz")]


@cache
def apk_seeds(limit: int = 140_000) -> list[bytes]:
    """Real `.apk` files, smallest first (hypothesis shrinks towards the first seed)."""
    return [p.read_bytes() for p in APK_FILES if p.stat().st_size <= limit]


@cache
def index_seeds() -> list[bytes]:
    return [p.read_bytes() for p in SMALL_INDEXES]


def _members(data: bytes) -> list[bytes]:
    """The gzip members of a well-formed seed (zlib directly: the code under test is not
    trusted to prepare its own inputs)."""
    out = []
    pos = 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        end = len(data) - len(d.unused_data)
        out.append(data[pos:end])
        pos = end
    return out


def _inflate(member: bytes) -> bytes:
    return zlib.decompress(member, 31)


def _inflate_some(member: bytes) -> bytes:
    """What a possibly truncated or corrupt member inflates to before it stops."""
    d = zlib.decompressobj(31)
    try:
        return d.decompress(member)
    except zlib.error:
        return b""


def _sections(data: bytes) -> tuple[bytes, bytes]:
    """(control tar, data tar) of a well-formed `.apk` seed."""
    members = _members(data)
    signed = _inflate(members[0])[:6] == b".SIGN."
    control = members[1] if signed else members[0]
    return _inflate(control), b"".join(_inflate(m) for m in members[2 if signed else 1:])


@cache
def tar_seeds() -> list[bytes]:
    """Uncompressed tars: control and data sections of the small packages, and tars using
    PAX records, GNU long names, devices and sub-second times."""
    out = []
    for data in apk_seeds(30_000):
        out.extend(_sections(data))  # the control tar has no end marker
    out.append(_made_tar(tarfile.PAX_FORMAT))
    out.append(_made_tar(tarfile.GNU_FORMAT))
    return sorted(out, key=len)


def _made_tar(fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
                **pax: str) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.size, ti.mtime, ti.mode = kind, len(data), 1_700_000_000, 0o755
            if kind == tarfile.SYMTYPE:
                ti.linkname = "../target"
            if kind == tarfile.CHRTYPE:
                ti.devmajor, ti.devminor = 1, 3
            ti.pax_headers = pax
            tf.addfile(ti, io.BytesIO(data) if data else None)

        add("usr/", tarfile.DIRTYPE)
        add("usr/bin/tool", data=b"#!/bin/sh\n" * 60,
            **{"APK-TOOLS.checksum.SHA1": "Q1" + "A" * 26 + "=",
               "SCHILY.xattr.security.capability": "\x01\x00"})
        add("usr/share/" + "long-name/" * 12 + "file", data=b"x")
        add("usr/bin/link", tarfile.SYMTYPE, mtime="1700000000.25", uid="1000")
        add("dev/null", tarfile.CHRTYPE)
    return buf.getvalue()


@cache
def index_text_seeds() -> list[str]:
    out = []
    for data in index_seeds():
        members = _members(data)
        tar = _inflate(members[-1])
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            f = tf.extractfile("APKINDEX")
            assert f is not None
            out.append(f.read().decode())
    return sorted(out, key=len)


@cache
def pkginfo_seeds() -> list[str]:
    out = []
    for data in apk_seeds(30_000):
        control, _ = _sections(data)
        with tarfile.open(fileobj=io.BytesIO(control + b"\0" * 1024)) as tf:
            for ti in tf:
                if ti.name.removeprefix("./") == ".PKGINFO":
                    f = tf.extractfile(ti)
                    assert f is not None
                    out.append(f.read().decode())
    return sorted(out, key=len)


CONFIG_SEEDS = [
    (GOLDEN / "apko.yaml").read_text(),
    """\
contents:
  build_repositories: [https://example.org/build]
  runtime_repositories: [https://example.org/runtime]
  repositories:
    - "@local ./packages"
  keyring: [./melange.rsa.pub]
  packages: [busybox, "ca-certificates-bundle>=1.0", "!conflict", tool@local]
entrypoint:
  type: service-bundle
  command: /bin/sh -l
  shell-fragment: "exec $@"
  services: {web: /usr/sbin/nginx}
cmd: --help
work-dir: /srv
stop-signal: SIGTERM
accounts:
  run-as: nginx
  groups:
    - groupname: nginx
      gid: 10000
      members: [nginx]
  users:
    - {username: nginx, uid: 0o23420, gid: 0x2710, shell: /bin/false, homedir: /srv}
environment: {PATH: "/usr/sbin:/usr/bin", EMPTY: ~}
paths:
  - {path: /run/nginx, type: directory, uid: 10000, gid: 10000, permissions: 0o755,
     recursive: true}
  - {path: /etc/motd, type: empty-file, permissions: 0644}
  - {path: /bin/sh, type: symlink, source: /bin/busybox}
  - {path: /etc/hard, type: hardlink, source: /etc/motd}
archs: [x86_64, aarch64, armv7]
annotations: {org.opencontainers.image.title: title}
volumes: [/data]
vcs-url: https://example.org/repo
layering: {strategy: origin, budget: 5}
base: &base [a, b]
""",
    "x: &a [1, *a]\n",
    "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n",
]

_INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"0", b"7", b" ", b"\n", b"=", b":",
                b"-1", b"99999999999", b"1e999999999", b"0" * 20, b"\xff" * 12, b"\xc3",
                b"\xed\xa0\x80", b"%", b"/..", b"../", b"&a", b"*a", b"[" * 50, b"{", b"!!",
                b"\t", b"\r\n", b"1" * 5000, b"-r", b"_rc", b"~"]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes], max_ops: int = 6) -> bytes:
    """A seed with up to `max_ops` byte-level edits (flip, set, cut, insert, duplicate,
    truncate, splice with another seed)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(("flip", "set", "cut", "insert", "dup", "truncate",
                                   "splice")))
        n = len(data)
        at = draw(st.integers(0, max(n - 1, 0)))
        if op == "flip" and n:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            value = draw(st.sampled_from(_INTERESTING) | st.binary(min_size=1, max_size=8))
            data[at:at + len(value)] = value
        elif op == "cut":
            del data[at:at + draw(st.integers(1, 4096))]
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(_INTERESTING) | st.binary(max_size=64))
        elif op == "dup":
            data[at:at] = data[at:at + draw(st.integers(1, 2048))]
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            cut = draw(st.integers(0, len(other)))
            data[at:] = other[cut:]
    return bytes(data)


def _gzip_header(flags: int, extra: bytes, name: bytes, comment: bytes) -> bytes:
    head = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff"
    if flags & 4:
        head += struct.pack("<H", len(extra) & 0xFFFF) + extra
    if flags & 8:
        head += name + b"\0"
    if flags & 16:
        head += comment + b"\0"
    if flags & 2:
        head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    return head


def _rewrap(content: bytes, head: bytes, level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = c.compress(content) + c.flush()
    return head + body + struct.pack("<II", zlib.crc32(content), len(content) & 0xFFFFFFFF)


def fix_tar_checksums(buf: bytearray) -> None:
    """Recompute the checksum of every 512-byte block that looks like a ustar header, so an
    edit inside a header reaches the fields after the checksum check."""
    for pos in range(0, len(buf) - 511, 512):
        if buf[pos + 257: pos + 262] == b"ustar":
            block = buf[pos: pos + 512]
            block[148:156] = b" " * 8
            buf[pos + 148: pos + 156] = b"%06o\0 " % sum(block)


_TAR_FIELDS = {"name": (0, 100), "mode": (100, 8), "uid": (108, 8), "mtime": (136, 12),
               "size": (124, 12), "type": (156, 1), "link": (157, 100), "prefix": (345, 155),
               "devmajor": (329, 8)}
_TAR_VALUES = [b"0", b"7777777", b"-1", b"99999999999", b"\x80\0\0\0\0\0\0\0\0\0\x10\0",
               b"\xff" * 12, b"x", b"L", b"K", b"g", b"5", b"3", b"../../etc/passwd",
               b"/abs", b"./", b"a" * 100, b"\0"]
_PAX_VALUES = ["-1024", "1e999999999", "abc", "1.5", "99999999999999999999", "", "1/0",
               "0x10", " 12", "nan", "1" * 5000, "\udcff"]


@st.composite
def tar_bytes(draw: st.DrawFn) -> bytes:
    """A seed tar with header fields overwritten (checksums fixed), PAX records with hostile
    values prepended, and byte-level edits on top."""
    buf = bytearray(draw(st.sampled_from(tar_seeds())))
    headers = [p for p in range(0, len(buf) - 511, 512) if buf[p + 257: p + 262] == b"ustar"]
    if draw(st.booleans()):
        key = draw(st.sampled_from(("size", "uid", "gid", "mtime", "path", "linkpath",
                                    "APK-TOOLS.checksum.SHA1", "SCHILY.xattr.a")))
        value = draw(st.sampled_from(_PAX_VALUES))
        pax = io.BytesIO()
        with tarfile.open(fileobj=pax, mode="w", format=tarfile.PAX_FORMAT) as tf:
            ti = tarfile.TarInfo("x")
            ti.pax_headers = {key: value}
            tf.addfile(ti)
        buf[0:0] = pax.getvalue()[:-1024][:-512]  # the x header, without its own entry
    for _ in range(draw(st.integers(0, 3)) if headers else 0):
        pos = draw(st.sampled_from(headers))
        start, width = _TAR_FIELDS[draw(st.sampled_from(sorted(_TAR_FIELDS)))]
        value = draw(st.sampled_from(_TAR_VALUES))[:width]
        buf[pos + start: pos + start + width] = value.ljust(width, b"\0")
    fix_tar_checksums(buf)
    out = draw(mutated([bytes(buf)], max_ops=2))
    if draw(st.booleans()):
        fixed = bytearray(out)
        fix_tar_checksums(fixed)
        out = bytes(fixed)
    return out


@st.composite
def gzip_streams(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A multi-member seed with its members dropped, duplicated, reordered, truncated or
    re-wrapped (gzip header flags FEXTRA/FNAME/FCOMMENT/FHCRC, another level), and the
    content of one member edited (tar checksums fixed) before it is compressed again."""
    members = _members(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(("drop", "dup", "swap", "truncate", "rewrap", "inner",
                                   "empty", "garbage")))
        i = draw(st.integers(0, len(members) - 1)) if members else 0
        if op == "drop" and members:
            del members[i]
        elif op == "dup" and members:
            members.insert(i, members[i])
        elif op == "swap" and len(members) > 1:
            j = draw(st.integers(0, len(members) - 1))
            members[i], members[j] = members[j], members[i]
        elif op == "truncate" and members:
            members[i] = members[i][: draw(st.integers(0, len(members[i])))]
        elif op in ("rewrap", "inner") and members:
            content = _inflate_some(members[i])
            if op == "inner":
                edited = bytearray(draw(mutated([content], max_ops=3)))
                fix_tar_checksums(edited)
                content = bytes(edited)
            head = _gzip_header(draw(st.integers(0, 31)), draw(st.binary(max_size=16)),
                                draw(st.binary(max_size=16)), draw(st.binary(max_size=16)))
            members[i] = _rewrap(content, head, draw(st.integers(0, 9)))
        elif op == "empty":
            members.insert(i, _rewrap(b"", _gzip_header(0, b"", b"", b""), 6))
        elif op == "garbage":
            members.insert(i, draw(st.binary(max_size=32)))
    return b"".join(members)


def hostile(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, byte-mutated seeds, and member-level mutations of them."""
    return st.one_of(st.binary(max_size=1024), mutated(seeds), gzip_streams(seeds))


# ------------------------------------------------------------- crashes found (regressions)

def _header(name: str, size: int = 0, typeflag: bytes = b"0",
            raw: dict[str, bytes] | None = None) -> bytes:
    """One ustar header block, with `raw` fields (by _TAR_FIELDS name) written over it and
    its checksum fixed."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.type = size, typeflag
    block = bytearray(ti.tobuf(format=tarfile.USTAR_FORMAT))
    for field_name, value in (raw or {}).items():
        start, width = _TAR_FIELDS[field_name]
        block[start:start + width] = value.ljust(width, b"\0")
    fix_tar_checksums(block)
    return bytes(block)


def _pax_entry(key: str, value: str) -> bytes:
    """An `x` header holding one record `key=value`."""
    tail = f" {key}={value}\n"
    length = len(tail) + len(str(len(tail)))
    length += len(str(length)) - len(str(len(tail)))
    body = f"{length}{tail}".encode()
    return _header("PaxHeader", len(body), b"x") + body.ljust(-(-len(body) // 512) * 512, b"\0")


_END = b"\0" * 1024
CRASHERS_TAR = [
    # base-256 negative size: the header walk stepped back to the same header for ever
    _header("f", raw={"size": b"\xff" * 12}) + _END,
    # PAX values int() or Fraction() refused (ValueError) or took for ever (1e999999999)
    _pax_entry("size", "1e999999999") + _header("f") + _END,
    _pax_entry("mtime", "1e999999999") + _header("f") + _END,
    _pax_entry("uid", "abc") + _header("f") + _END,
    _pax_entry("size", "9" * 5000) + _header("f") + _END,
    # an octal field with a sign (int() takes "-7"): a negative size
    _header("f", raw={"size": b"-7"}) + b"x" * 512 + _END,
    # the last entry's padding missing: its end was past the buffer
    _header("f", 3) + b"abc",
    # a global PAX header whose padding runs past the end: end_offset past the buffer
    _header("g", 10, b"g") + b"10 a=bcde\n",
]
# a control tar whose size field (base-256) no seek can reach: tarfile's OverflowError
HUGE_CONTROL = _header(".PKGINFO", raw={"size": b"\x80" + b"\xff" * 11}) + b"x" * 512


# ----------------------------------------------------------------------------------- targets

def _gzip_target(data: bytes) -> None:
    ranges = outcome("gzip", split_members, data, SOURCE)
    streamed = outcome("gzip", lambda: b"".join(iter_inflate(data, SOURCE)))
    blocks = outcome("gzip", scan_blocks, data, SOURCE)
    if ranges is None:
        # the other splitters refuse what split_members refuses (an empty input streams
        # as nothing)
        assert blocks is None and (streamed is None or not data)
        return
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert all(end > start for start, end in ranges)
    content = b"".join(inflate_member(data, start, SOURCE)[0] for start, _ in ranges)
    assert streamed == content
    assert blocks is not None, "scan_blocks refused what split_members accepted"
    assert [(m.start, m.end) for m in blocks.members] == ranges
    assert blocks.size == len(content)


@settings(PROFILE)
@given(hostile(apk_seeds() + index_seeds()))
def _fuzz_gzip(data: bytes) -> None:
    _gzip_target(data)


def test_fuzz_gzip_members() -> None:
    fuzz("gzip", _fuzz_gzip)


def _check_tar_index(buf: bytes, idx: TarIndex) -> None:
    assert 0 <= idx.end_offset <= len(buf)
    previous = -1
    for e in idx.entries:
        assert e.size >= 0, e
        assert previous < e.header_offset <= e.data_offset - 512, e
        assert e.data_offset + e.size <= len(buf), e
        assert e.end_offset <= idx.end_offset, e
        previous = e.header_offset
    assert TarIndex.from_json(idx.to_json()) == idx


@settings(PROFILE)
@given(st.one_of(st.binary(max_size=2048), mutated(tar_seeds()), tar_bytes()))
@example(CRASHERS_TAR[0])
@example(CRASHERS_TAR[1])
@example(CRASHERS_TAR[2])
@example(CRASHERS_TAR[3])
@example(CRASHERS_TAR[4])
@example(CRASHERS_TAR[5])
@example(CRASHERS_TAR[6])
@example(CRASHERS_TAR[7])
def _fuzz_tar_index(buf: bytes) -> None:
    idx = outcome("tarindex", index_tar, buf, SOURCE)
    if idx is not None:
        _check_tar_index(buf, idx)


def test_fuzz_tar_index() -> None:
    fuzz("tarindex", _fuzz_tar_index)


def _check_package(pkg: Package) -> None:
    assert pkg.name and pkg.version
    for attr in ("size", "installed_size", "build_time"):
        assert isinstance(getattr(pkg, attr), int)
    for attr in ("depends", "provides", "install_if", "replaces", "triggers"):
        assert all(isinstance(x, str) and x and not x.isspace() for x in getattr(pkg, attr))


def _text(draw: st.DrawFn, seeds: list[str]) -> str:
    raw = draw(mutated([s.encode() for s in seeds]))
    return raw.decode("utf-8", "replace") if draw(st.booleans()) else raw.decode("latin-1")


@st.composite
def pkginfo_texts(draw: st.DrawFn) -> str:
    return _text(draw, pkginfo_seeds()) if draw(st.booleans()) else draw(st.text(max_size=300))


@settings(PROFILE)
@given(pkginfo_texts())
@example("pkgname = a\npkgver = 1.0-r0\npkgver =\n")  # the last pkgver counted, empty
def _fuzz_pkginfo_text(text: str) -> None:
    fields = outcome("pkginfo", parse_pkginfo, text, SOURCE)
    if fields is not None:
        pkg = outcome("pkginfo", pkginfo_to_package, fields, SOURCE)
        if pkg is not None:
            _check_package(pkg)


@settings(PROFILE)
@given(st.one_of(mutated(tar_seeds()[:8]), tar_bytes()))
@example(HUGE_CONTROL)
def _fuzz_control_tar(tar: bytes) -> None:
    parsed = outcome("pkginfo", read_control, tar, SOURCE)
    if parsed is not None:
        fields, rest = parsed
        assert all(ti.name.removeprefix("./").startswith(".") for ti, _ in rest)


@settings(PROFILE)
@given(hostile(apk_seeds(30_000)))
# a first member that is no tar: tarfile's auto-detection made a five-line message
@example(_rewrap(b"not a tar " * 60, _gzip_header(0, b"", b"", b""), 6) * 3)
def _fuzz_apk(data: bytes) -> None:
    apk = outcome("pkginfo", read_apk, data, SOURCE)
    if apk is not None:
        _check_package(apk.package)
        assert apk.data_offset + len(apk.data) == apk.size == len(data)
        assert apk.package.checksum.startswith("Q1")
        # the data tar, streamed and checked file by file (errors name the package)
        report = outcome("pkginfo", verify_apk, apk, None, None, False,
                         source=str(apk.package))
        assert report is None or report.files >= report.checked_files
    path = _workdir() / SOURCE
    path.write_bytes(data)
    layout = outcome("pkginfo", read_layout, path, source=str(path))
    # read_apk reads what read_layout reads, and parses the control section too
    if layout is None:
        assert apk is None, "read_apk accepted what read_layout refused"
    elif apk is not None:
        assert (layout.control_start, layout.control_end) == (
            len(apk.signature or b""), apk.data_offset)


@cache
def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="apkimage-fuzz-"))


def test_fuzz_pkginfo() -> None:
    fuzz("pkginfo", _fuzz_pkginfo_text, _fuzz_control_tar, _fuzz_apk)


@st.composite
def index_texts(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return _text(draw, index_text_seeds())
    lines = draw(st.lists(st.sampled_from(list("CPVASITULomtcDipkqrXz ")).flatmap(
        lambda c: st.text(max_size=12).map(lambda v, c=c: f"{c}:{v}")), max_size=12))
    return "\n".join(lines)


@settings(PROFILE)
@given(index_texts())
@example("P:\nV:")  # an empty name and version made a package
def _fuzz_index_text(text: str) -> None:
    pkgs = outcome("apkindex", parse_index_text, text, SOURCE)
    for pkg in pkgs or []:
        _check_package(pkg)


@cache
def _keyring() -> Keyring:
    return Keyring.from_paths(sorted(KEYS.glob("*.rsa.pub")))


@settings(PROFILE)
@given(hostile(index_seeds()), st.booleans())
def _fuzz_index_file(data: bytes, with_keys: bool) -> None:
    index = outcome("apkindex", read_index, data, _keyring() if with_keys else None, SOURCE,
                    True)
    if index is not None:
        for pkg in index.packages:
            _check_package(pkg)
        assert set(index.signers) <= {p.name for p in KEYS.glob("*.rsa.pub")}


def test_fuzz_apkindex() -> None:
    fuzz("apkindex", _fuzz_index_text, _fuzz_index_file)


_VERSION_ALPHABET = "0123456789.abcz_-~rpgitsvnhlpe@<>=!~ \t"
_VERSION_SEEDS = ["1.0", "1.0-r1", "2.12-r1", "1.5.7-r1-r1", "1.0_rc1", "1.0_p2_alpha3",
                  "0.1.0~abc123-r0", "2023c-r0", "1.001", "1.01", "3.2.0-r23"]


@st.composite
def version_texts(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.text(alphabet=_VERSION_ALPHABET, max_size=24))
    if kind == 1:
        return draw(mutated([v.encode() for v in _VERSION_SEEDS])).decode("latin-1")
    return draw(st.text(max_size=16))


@settings(PROFILE)
@given(version_texts(), version_texts(), version_texts())
@example("1" * 5000, "1", "a>=" + "9" * 5000)  # 5000-digit numbers: int() refused them
@example("1.0-r" + "9" * 4400, "1.0." + "0" * 4400 + "1", "=1_p" + "1" * 4301)
def _fuzz_version(a: str, b: str, constraint: str) -> None:
    assert isinstance(is_valid_version(a), bool)
    ab = outcome("version", compare_versions, a, b)
    ba = outcome("version", compare_versions, b, a)
    assert ab in (-1, 0, 1) and ab == -ba
    assert outcome("version", compare_versions, a, a) == 0
    c = outcome("version", parse_constraint, constraint, source=repr(constraint)[:40])
    if c is not None:
        assert parse_constraint(str(c)) == c
        assert isinstance(c.matches(a), bool) and isinstance(c.allows(b, "Q1x"), bool)


def test_fuzz_version() -> None:
    fuzz("version", _fuzz_version)


@st.composite
def config_bytes(draw: st.DrawFn) -> bytes:
    seeds = [s.encode() for s in CONFIG_SEEDS]
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=512))
    return draw(mutated(seeds))


@settings(PROFILE)
@given(config_bytes())
@example(b"\x80")  # not UTF-8: UnicodeDecodeError
@example(b"archs:\n- x86_64\n-\n")  # a null list item: AttributeError
@example(b"cmd: \0\n")  # PyYAML's reader refuses it in the loader's constructor
@example(b"contents: {packages: " + b"[" * 5000 + b"]" * 5000 + b"}")  # RecursionError
@example(b"a: &a [x, *a]\n")  # a recursive alias
def _fuzz_config(raw: bytes) -> None:
    path = _workdir() / "apko.yaml"
    path.write_bytes(raw)
    cfg = outcome("config", load_config, path, _workdir(), source=str(path))
    if cfg is not None:
        assert cfg.source_file == str(path)
        assert all(isinstance(p, str) for p in cfg.contents.packages)


def test_fuzz_config() -> None:
    fuzz("config", _fuzz_config)


@pytest.mark.parametrize("seed", APK_FILES[:3], ids=lambda p: p.name)
def test_seeds_parse(seed: Path) -> None:
    """The harness's own check: the unmutated seeds are valid, so a refusal in a target is
    the mutation's doing."""
    data = seed.read_bytes()
    assert read_apk(data, SOURCE).package.name
    assert index_tar(tar_seeds()[0], SOURCE).entries
    _gzip_target(data)
