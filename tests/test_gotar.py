"""The tar writer against apko's golden layers and against Go archive/tar's rules."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.errors import FormatError
from builder.gotar import (
    END_MARKER,
    TarHeader,
    TarWriter,
    encode_header,
    format_pax_record,
    padding,
    pax_header_name,
    split_ustar_path,
)
from tests.helpers import GOLDEN_BLOBS

LAYERS = {
    "c7557730da0e2d7fb242d8d1ac6dcf7e3a2439732aa5981270b4f3a02454b738":
        "20f698463c2755b6dc42b7d07e959ed7455a06e7367d507e829a315898f21a01",
    "7e0f9d62f6cab4785e18a55f17d03f20ffb776881f1f46258efd9458f7cdaf08":
        "ca5e16c7c944d764863cb1a4286e668e72d6d87ef9ddd82337b19d87715bae7e",
}


@pytest.mark.parametrize("blob,diff_id", sorted(LAYERS.items()))
def test_golden_layer_reencodes_byte_for_byte(blob: str, diff_id: str) -> None:
    original = gzip.decompress((GOLDEN_BLOBS / blob).read_bytes())
    assert hashlib.sha256(original).hexdigest() == diff_id
    out = io.BytesIO()
    writer = TarWriter(out)
    with tarfile.open(fileobj=io.BytesIO(original)) as tf:
        members = tf.getmembers()
        for m in members:
            data = tf.extractfile(m).read() if m.isreg() else None
            writer.add(TarHeader.from_tarinfo(m), data)
    writer.close()
    assert len(members) > 30
    assert out.getvalue() == original
    assert writer.offset == len(original)
    assert hashlib.sha256(out.getvalue()).hexdigest() == diff_id


def _field(block: bytes, start: int, width: int) -> bytes:
    return block[start : start + width]


def _parse_one(data: bytes) -> tarfile.TarInfo:
    with tarfile.open(fileobj=io.BytesIO(data + END_MARKER)) as tf:
        (m,) = tf.getmembers()
        return m


def test_plain_ustar_fields() -> None:
    blk = encode_header(TarHeader(name="etc/passwd", mode=0o644, size=5, mtime=1700000000))
    assert len(blk) == 512
    assert _field(blk, 0, 100) == b"etc/passwd".ljust(100, b"\0")
    assert _field(blk, 100, 8) == b"0000644\0"
    assert _field(blk, 108, 8) == b"0000000\0"
    assert _field(blk, 124, 12) == b"00000000005\0"
    assert _field(blk, 136, 12) == b"%011o\0" % 1700000000
    assert _field(blk, 156, 1) == b"0"
    assert _field(blk, 257, 8) == b"ustar\x0000"
    assert _field(blk, 329, 16) == b"0000000\0" * 2  # devmajor/minor always formatted
    chk = sum(blk[:148]) + 256 + sum(blk[156:])
    assert _field(blk, 148, 8) == b"%06o\0 " % chk


def test_directory_special_bits_and_device() -> None:
    tmp = encode_header(TarHeader(name="tmp", type="5", mode=0o1777))
    assert _field(tmp, 100, 8) == b"0001777\0"
    assert _field(tmp, 0, 4) == b"tmp\0"  # no trailing slash added
    dev = encode_header(TarHeader(name="dev/null", type="3", mode=0o666, devmajor=1, devminor=3))
    assert _field(dev, 329, 16) == b"0000001\x000000003\x00"


def test_long_name_split_into_prefix() -> None:
    d = "usr/lib/" + "d" * 60 + "/" + "e" * 40
    name = d + "/" + "f" * 90  # 200 bytes, splittable
    assert len(name) > 100
    blk = encode_header(TarHeader(name=name))
    assert len(blk) == 512  # USTAR, no PAX
    assert _field(blk, 0, 100) == (b"f" * 90).ljust(100, b"\0")
    assert _field(blk, 345, 155) == d.encode().ljust(155, b"\0")
    assert _parse_one(blk).name == name


def test_split_rule_edges() -> None:
    assert split_ustar_path(b"a" * 100) is None  # fits as is
    assert split_ustar_path(b"/" + b"a" * 100) is None  # prefix would be empty
    assert split_ustar_path(b"p/" + b"a" * 101) is None  # suffix > 100
    assert split_ustar_path(b"p" * 156 + b"/" + b"a") is None  # prefix > 155
    assert split_ustar_path(b"p" * 155 + b"/" + b"a") == (b"p" * 155, b"a")
    # Last "/" within the first 156 bytes wins.
    assert split_ustar_path(b"a/b/" + b"c" * 99) == (b"a/b", b"c" * 99)
    # A trailing slash is not a split point when the path is <= 156 bytes.
    assert split_ustar_path(b"x/" + b"y" * 99 + b"/") == (b"x", b"y" * 99 + b"/")
    assert split_ustar_path(b"x/" + b"y" * 100 + b"/") is None  # suffix would be 101 bytes
    assert split_ustar_path("é/".encode() + b"a" * 100) is None  # never for non-ASCII


def test_unsplittable_long_name_uses_pax() -> None:
    name = "opt/" + "n" * 120  # suffix > 100 cannot be split
    out = encode_header(TarHeader(name=name, size=0))
    assert len(out) == 3 * 512
    pax_hdr, body, main = out[:512], out[512:1024], out[1024:]
    assert _field(pax_hdr, 0, 100) == b"opt/PaxHeaders.0/" + b"n" * 83
    assert _field(pax_hdr, 156, 1) == b"x"
    assert _field(pax_hdr, 100, 24) == b"0000000\0" * 3
    assert _field(pax_hdr, 136, 12) == b"00000000000\0"
    assert _field(pax_hdr, 257, 8) == b"ustar\x0000"
    assert _field(pax_hdr, 265, 80) == bytes(80)  # uname/gname/devs left empty
    record = format_pax_record(b"path", name.encode())
    assert body == record + bytes(512 - len(record))
    assert _field(pax_hdr, 124, 12) == b"%011o\0" % len(record)
    assert _field(main, 0, 100) == name.encode()[:100]  # truncated, no prefix split
    assert _field(main, 345, 155) == bytes(155)
    assert _parse_one(out).name == name


def test_name_over_255_bytes() -> None:
    name = "/".join(["seg" + str(i) * 20 for i in range(12)])
    assert len(name) > 255
    m = _parse_one(encode_header(TarHeader(name=name)))
    assert m.name == name


def test_non_ascii_name_is_pax_and_stripped_in_main_header() -> None:
    name = "usr/share/caf\u00e9.txt"
    out = encode_header(TarHeader(name=name, size=0))
    assert len(out) == 3 * 512
    assert _field(out, 0, 100) == b"usr/share/PaxHeaders.0/caf.txt".ljust(100, b"\0")
    assert out[512:1024].startswith(b"28 path=usr/share/caf\xc3\xa9.txt\n")
    assert _field(out, 1024, 100) == b"usr/share/caf.txt".ljust(100, b"\0")
    assert _parse_one(out).name == name


def test_long_symlink_target() -> None:
    target = "../" * 40 + "target"
    out = encode_header(TarHeader(name="lib/link", type="2", mode=0o777, linkname=target))
    assert len(out) == 3 * 512
    assert out[512:].startswith(format_pax_record(b"linkpath", target.encode()))
    main = out[1024:]
    assert _field(main, 157, 100) == target.encode()[:100]
    m = _parse_one(out)
    assert m.issym() and m.linkname == target


def test_xattrs_sorted_records_on_regular_file() -> None:
    h = TarHeader(
        name="usr/bin/ping",
        mode=0o755,
        size=0,
        xattrs={"user.z": "1", "security.capability": b"\x01\x00\x00\x02"},
    )
    out = encode_header(h)
    body = out[512:1024]
    cap = format_pax_record(b"SCHILY.xattr.security.capability", b"\x01\x00\x00\x02")
    user = format_pax_record(b"SCHILY.xattr.user.z", b"1")
    assert body.startswith(cap + user)
    assert cap.startswith(b"41 ") and len(cap) == 41
    assert _field(out, 0, 100).rstrip(b"\0") == b"usr/bin/PaxHeaders.0/ping"
    assert _field(out, 1024, 100).rstrip(b"\0") == b"usr/bin/ping"


def test_long_uname_and_big_uid() -> None:
    out = encode_header(TarHeader(name="f", uname="u" * 33, uid=8**7))
    body = out[512:1024]
    assert body.startswith(b"15 uid=2097152\n" + format_pax_record(b"uname", b"u" * 33))
    main = out[1024:]
    assert _field(main, 108, 8) == b"0000000\0"  # overflow written as zero
    assert _field(main, 265, 32) == b"u" * 32  # cut to width, no NUL
    m = _parse_one(out)
    assert m.uid == 8**7 and m.uname == "u" * 33


def test_negative_mtime_goes_to_pax() -> None:
    out = encode_header(TarHeader(name="old", mtime=-1))
    assert out[512:].startswith(b"12 mtime=-1\n")


def test_pax_record_length_fixed_point() -> None:
    assert format_pax_record(b"path", b"/etc/hosts") == b"19 path=/etc/hosts\n"
    assert format_pax_record(b"a", b"b") == b"6 a=b\n"
    # 4 + 91 + 3 = 98 -> 100 with two digits, but "100" has three digits -> 101.
    rec = format_pax_record(b"path", b"x" * 91)
    assert rec.startswith(b"101 ") and len(rec) == 101
    rec = format_pax_record(b"path", b"x" * 90)  # 97 + 2 = 99, stays two digits
    assert rec.startswith(b"99 ") and len(rec) == 99


def test_pax_header_name_cleaning() -> None:
    assert pax_header_name(b"file") == b"PaxHeaders.0/file"
    assert pax_header_name(b"a/b/c") == b"a/b/PaxHeaders.0/c"
    assert pax_header_name(b"./x") == b"PaxHeaders.0/x"
    assert pax_header_name(b"/abs//p") == b"/abs/PaxHeaders.0/p"
    assert pax_header_name(b"dir/") == b"dir/PaxHeaders.0"


def test_writer_padding_end_marker_and_size_check() -> None:
    out = io.BytesIO()
    w = TarWriter(out)
    off = w.add(TarHeader(name="a", size=3), [b"a", b"bc"])
    assert off == 512
    w.add(TarHeader(name="b", size=600), io.BytesIO(b"z" * 600))
    w.add(TarHeader(name="d", type="5", mode=0o755))
    w.close()
    data = out.getvalue()
    assert len(data) == 512 + 512 + 512 + 1024 + 512 + 1024
    assert data.endswith(END_MARKER) and padding(3) == bytes(509) and padding(512) == b""
    with pytest.raises(FormatError, match="header size 4"):
        TarWriter(io.BytesIO()).add(TarHeader(name="x", size=4), b"abc")


_name_part = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters="/"),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(_name_part, min_size=1, max_size=6),
    link=st.text(alphabet="ab/.", max_size=130),
    uid=st.integers(0, 8**8),
    mtime=st.integers(0, 8**11 - 1),
    xattr=st.booleans(),
)
def test_roundtrip_through_tarfile(
    parts: list[str], link: str, uid: int, mtime: int, xattr: bool
) -> None:
    name = "/".join(parts)
    h = TarHeader(name=name, type="2", mode=0o777, uid=uid, mtime=mtime, linkname=link)
    if xattr:
        h.xattrs = {"user.k": "v"}
    out = encode_header(h)
    raw = name.encode()
    needs_pax = (
        xattr
        or len(link) > 100
        or uid >= 8**7
        or not raw.isascii()
        or (len(raw) > 100 and split_ustar_path(raw) is None)
    )
    assert len(out) == (512 if not needs_pax else len(out))
    assert (len(out) > 512) == needs_pax
    m = _parse_one(out)
    assert (m.name, m.linkname, m.uid, m.mtime) == (name, link, uid, mtime)


def test_pax_records_force_pax_sorted_with_xattrs() -> None:
    """Go's PAXRecords: any record makes the entry PAX; records and xattrs sorted together."""
    import io
    import tarfile

    from builder.gotar import END_MARKER, TarHeader, encode_header

    h = TarHeader("usr/bin/x", size=0, xattrs={"user.a": "1"},
                  pax={"APK-TOOLS.checksum.SHA1": "da39a3ee5e6b4b0d3255bfef95601890afd80709"})
    raw = encode_header(h)
    assert raw[156:157] == b"x"  # a PAX header even though everything fits USTAR
    body = raw[512:1024].rstrip(b"\0")
    assert body.index(b"APK-TOOLS") < body.index(b"SCHILY.xattr.user.a")
    with tarfile.open(fileobj=io.BytesIO(raw + END_MARKER)) as tf:
        (ti,) = tf.getmembers()
    assert ti.pax_headers["APK-TOOLS.checksum.SHA1"].startswith("da39a3ee")
    assert ti.pax_headers["SCHILY.xattr.user.a"] == "1"
