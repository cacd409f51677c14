"""The tar header index agrees with tarfile on real APK data sections and survives JSON."""

from __future__ import annotations

import io
import tarfile
import zlib

import pytest

from builder.apk.tarindex import TarIndex, index_tar
from builder.errors import FormatError
from tests.helpers import FIXTURES

APKS = sorted((FIXTURES / "apk").rglob("*.apk"))


def _data_tar(apk: bytes) -> bytes:
    """Decompress the members after signature+control: the data section's tar."""
    members = []
    rest = apk
    while rest:
        d = zlib.decompressobj(31)
        members.append(d.decompress(rest))
        rest = d.unused_data
    # The control member is the one holding .PKGINFO; the data tar is all members after it.
    control = next(i for i, m in enumerate(members) if b".PKGINFO" in m[:512])
    return b"".join(members[control + 1:])


@pytest.mark.parametrize("path", APKS, ids=[p.name for p in APKS])
def test_matches_tarfile(path) -> None:
    data = _data_tar(path.read_bytes())
    index = index_tar(data, path.name)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        members = tf.getmembers()
    assert [e.path for e in index.entries] == [m.name.removeprefix("./").rstrip("/")
                                               for m in members]
    for entry, member in zip(index.entries, members, strict=True):
        assert entry.size == member.size
        assert entry.mode == member.mode
        assert entry.mtime == int(member.mtime)
        assert entry.data_offset == member.offset_data
        assert entry.linkname == member.linkname
        assert entry.checksum == member.pax_headers.get("APK-TOOLS.checksum.SHA1", "")
    assert TarIndex.from_json(index.to_json()) == index


def test_bad_checksum_is_rejected() -> None:
    data = bytearray(_data_tar((FIXTURES / "apk/alpine/curl-7.83.1-r1.apk").read_bytes()))
    data[10] ^= 1
    with pytest.raises(FormatError, match="checksum mismatch at offset 0"):
        index_tar(bytes(data), "curl")


def test_truncated_archive_is_rejected() -> None:
    data = _data_tar((FIXTURES / "apk/alpine/curl-7.83.1-r1.apk").read_bytes())
    big = max(index_tar(data).entries, key=lambda e: e.size)
    with pytest.raises(FormatError, match="runs past the end"):
        index_tar(data[: big.data_offset + 10], "curl")


@pytest.mark.parametrize(("mtime", "whole", "exact"), [
    (1700000000, 1700000000, True),
    (1700000000.25, 1700000000, False),
    (1700000000.5, 1700000001, False),  # Go's Time.Round: halves round up
    (1700000000.75, 1700000001, False),
])
def test_pax_mtime_is_rounded_like_go(mtime, whole, exact) -> None:
    """A sub-second PAX mtime is recorded as Go's archive/tar (apko's layer writer) writes it,
    and flagged, so the stitched layer does not keep the fraction in a verbatim header."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("usr/bin/x")
        info.mtime = mtime  # a float goes to a PAX "mtime" record
        tf.addfile(info, io.BytesIO(b""))
    (entry,) = index_tar(buf.getvalue()).entries
    assert (entry.mtime, entry.mtime_exact) == (whole, exact)


def test_bad_pax_mtime_is_rejected() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("x")
        info.pax_headers = {"mtime": "soon"}
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(FormatError, match="bad PAX time 'soon'"):
        index_tar(buf.getvalue(), "pkg:data")


def test_global_pax_header_is_flagged_on_the_entry_it_precedes() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as tf:
        for name in ("a", "b"):
            tf.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    first, second = index_tar(buf.getvalue()).entries
    assert (first.path, first.global_header) == ("a", True)
    assert (second.path, second.global_header) == ("b", False)
