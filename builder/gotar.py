"""A tar writer that produces the bytes Go's `archive/tar` Writer produces.

apko writes its layer with Go's writer, so reproducing its diffID means reproducing that
writer's choices exactly:

* USTAR unless something cannot be expressed in USTAR; then PAX (never GNU here).
* A name longer than 100 bytes is split at a `/` into the USTAR prefix (<= 155) and name
  (<= 100) fields when that is possible (Go's `splitUSTARPath` rule); non-ASCII names are
  never split.
* PAX is needed for: xattrs (`SCHILY.xattr.<name>` records), names that are non-ASCII or too
  long to split, link names that are non-ASCII or > 100 bytes, uname/gname that are
  non-ASCII or > 32 bytes, uid/gid >= 8**7, size >= 8**11, mtime < 0 or >= 8**11.
* The PAX extended header is named `<dir>/PaxHeaders.0/<base>` (path-cleaned, ASCII only,
  cut to 100 bytes, trailing `/` removed), typeflag `x`, mode/uid/gid/mtime all zero,
  uname/gname/devmajor/devminor left as NUL bytes, magic `ustar\\0` + `00`.
  Its records are `"<len> key=value\\n"` sorted by key, `<len>` counting itself.
* The main header after a PAX header has non-ASCII bytes removed from its string fields,
  strings cut to their field width, and numbers that do not fit written as 0.
* Numbers are zero-padded octal with a NUL terminator; the checksum is `%06o\\0 `;
  devmajor/devminor are always written; the archive ends with 1024 zero bytes and is not
  padded to a record size.

Names and other strings may be `str` (encoded UTF-8, surrogateescape) or `bytes`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol

from builder.errors import FormatError

if TYPE_CHECKING:
    import tarfile

BLOCK = 512
END_MARKER = bytes(2 * BLOCK)
_PADS = [bytes(i) for i in range(BLOCK)]
_NAME_SIZE = 100
_PREFIX_SIZE = 155
_MAX_OCT8 = 8**7  # values below fit an 8-byte octal field (7 digits + NUL)
_MAX_OCT12 = 8**11  # values below fit a 12-byte octal field (11 digits + NUL)
_MAGIC = b"ustar\x0000"
_TAIL = bytes(12)
_HEADER_ONLY = frozenset("123456")  # link, symlink, char, block, dir, fifo: no data
_COPY_CHUNK = 1 << 20

TYPE_REG = "0"
TYPE_LINK = "1"
TYPE_SYMLINK = "2"
TYPE_CHAR = "3"
TYPE_BLOCK = "4"
TYPE_DIR = "5"
TYPE_FIFO = "6"


@dataclass
class TarHeader:
    """One entry as Go's `tar.Header` sees it (only the fields apko sets).

    `mode` holds permission bits plus 04000/02000/01000 (no file-type bits), `mtime` is whole
    seconds (0 stands for Go's zero time too), `xattrs` maps attribute names (without the
    `SCHILY.xattr.` prefix) to values, `pax` holds other PAX records (Go's `PAXRecords`, e.g.
    melange's `APK-TOOLS.checksum.SHA1`); like xattrs, any record makes the entry PAX.
    """

    name: str | bytes
    type: str = TYPE_REG
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    linkname: str | bytes = ""
    uname: str | bytes = ""
    gname: str | bytes = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str | bytes, str | bytes] = field(default_factory=dict)
    pax: dict[str | bytes, str | bytes] = field(default_factory=dict)

    @classmethod
    def from_tarinfo(cls, ti: tarfile.TarInfo) -> TarHeader:
        """Build a header from a `tarfile.TarInfo` (xattrs from its SCHILY.xattr records)."""
        pax = ti.pax_headers or {}
        xattrs: dict[str | bytes, str | bytes] = {
            k[len("SCHILY.xattr."):]: v for k, v in pax.items() if k.startswith("SCHILY.xattr.")
        }
        return cls(
            name=ti.name,
            type=ti.type.decode("ascii"),
            mode=ti.mode,
            uid=ti.uid,
            gid=ti.gid,
            size=ti.size,
            mtime=int(ti.mtime),
            linkname=ti.linkname,
            uname=ti.uname,
            gname=ti.gname,
            devmajor=ti.devmajor,
            devminor=ti.devminor,
            xattrs=xattrs,
        )


def _b(s: str | bytes) -> bytes:
    return s if isinstance(s, bytes) else s.encode("utf-8", "surrogateescape")


def _is_ascii(b: bytes) -> bool:
    # Go's isASCII: every rune < 0x80 and not NUL.
    return b.isascii() and b"\x00" not in b


def _to_ascii(b: bytes) -> bytes:
    if _is_ascii(b):
        return b
    return bytes(c for c in b if 0 < c < 0x80)


def _fmt_string(b: bytes, width: int) -> bytes:
    """Go's formatter.formatString into a zeroed field of `width` bytes."""
    if len(b) <= width:
        return b.ljust(width, b"\x00")
    out = bytearray(b[:width])
    if out[-1] == 0x2F:  # "/": buggy readers would see a directory; NUL it out
        out[len(b[: width - 1].rstrip(b"/"))] = 0
    return bytes(out)


def _fmt_octal(n: int, width: int) -> bytes:
    """Go's formatter.formatOctal: overflow is written as 0."""
    limit = _MAX_OCT8 if width == 8 else _MAX_OCT12
    if n < 0 or n >= limit:
        n = 0
    return b"%0*o\x00" % (width - 1, n)


def split_ustar_path(name: bytes) -> tuple[bytes, bytes] | None:
    """Go's splitUSTARPath: (prefix, name) for a long ASCII path, or None if impossible."""
    length = len(name)
    if length <= _NAME_SIZE or not _is_ascii(name):
        return None
    if length > _PREFIX_SIZE + 1:
        length = _PREFIX_SIZE + 1
    elif name[length - 1] == 0x2F:
        length -= 1
    i = name.rfind(b"/", 0, length)
    nlen = len(name) - i - 1
    if i <= 0 or nlen > _NAME_SIZE or nlen == 0 or i > _PREFIX_SIZE:
        return None
    return name[:i], name[i + 1 :]


def format_pax_record(key: bytes, value: bytes) -> bytes:
    """`"<len> key=value\\n"` where <len> is the record's own total length in bytes."""
    size = len(key) + len(value) + 3
    size += len(str(size))
    record = b"%d %s=%s\n" % (size, key, value)
    if len(record) != size:
        size = len(record)
        record = b"%d %s=%s\n" % (size, key, value)
    return record


def _go_path_clean(p: bytes) -> bytes:
    """Go's path.Clean (posixpath.normpath differs only for a leading `//`)."""
    rooted = p.startswith(b"/")
    cleaned = posixpath.normpath(p)
    if rooted:
        cleaned = b"/" + cleaned.lstrip(b"/")
    return cleaned


def pax_header_name(name: bytes) -> bytes:
    """Name of the PAX extended header for `name`: `<dir>/PaxHeaders.0/<base>`."""
    slash = name.rfind(b"/")
    d, f = name[: slash + 1], name[slash + 1 :]
    joined = _go_path_clean(d + b"PaxHeaders.0" + (b"/" + f if f else b""))
    joined = _to_ascii(joined)[:_NAME_SIZE]
    return joined.rstrip(b"/")


def _checksummed(block: bytes) -> bytes:
    # The checksum field counts as 8 spaces (8 * 0x20 = 256); the field holds zeros now.
    chk = sum(block) + 256
    return block[:148] + b"%06o\x00 " % chk + block[156:]


def _raw_pax_block(name: bytes, data_len: int) -> bytes:
    blk = b"".join(
        (
            _fmt_string(name, 100),
            b"0000000\x00" * 3,
            _fmt_octal(data_len, 12),
            b"00000000000\x00",
            bytes(8),
            b"x",
            bytes(100),
            _MAGIC,
            bytes(BLOCK - 265),
        )
    )
    return _checksummed(blk)


def _main_block(
    h: TarHeader,
    name: bytes,
    prefix: bytes,
    link: bytes,
    uname: bytes,
    gname: bytes,
) -> bytes:
    typ = h.type.encode("ascii") if isinstance(h.type, str) else h.type
    if len(typ) != 1:
        raise FormatError(f"tar entry {name!r}: typeflag must be one byte, got {h.type!r}")
    blk = b"".join(
        (
            _fmt_string(name, 100),
            _fmt_octal(h.mode, 8),
            _fmt_octal(h.uid, 8),
            _fmt_octal(h.gid, 8),
            _fmt_octal(h.size, 12),
            _fmt_octal(h.mtime, 12),
            bytes(8),
            typ,
            _fmt_string(link, 100),
            _MAGIC,
            _fmt_string(uname, 32),
            _fmt_string(gname, 32),
            _fmt_octal(h.devmajor, 8),
            _fmt_octal(h.devminor, 8),
            _fmt_string(prefix, 155),
            _TAIL,
        )
    )
    return _checksummed(blk)


# Headers without xattrs or PAX records encoded in this process, by their fields: the images
# of a world share most of their directories' and files' headers.
_ENCODED: dict[tuple[object, ...], bytes] = {}
_ENCODED_MAX = 1 << 16


def encode_header(h: TarHeader) -> bytes:
    """The header block(s) Go writes for `h`: one USTAR block, or PAX header + body + block."""
    if h.xattrs or h.pax:
        return _encode_header(h)
    key = (h.name, h.type, h.mode, h.uid, h.gid, h.size, h.mtime, h.linkname, h.uname,
           h.gname, h.devmajor, h.devminor)
    got = _ENCODED.get(key)
    if got is None:
        got = _encode_header(h)
        if len(_ENCODED) >= _ENCODED_MAX:
            _ENCODED.clear()
        _ENCODED[key] = got
    return got


def _encode_header(h: TarHeader) -> bytes:
    name, link, uname, gname = _b(h.name), _b(h.linkname), _b(h.uname), _b(h.gname)
    if not isinstance(h.mtime, int):
        raise FormatError(f"tar entry {name!r}: mtime must be whole seconds, got {h.mtime!r}")

    # Fast path: everything fits plain USTAR without a prefix.
    if (
        not h.xattrs
        and not h.pax
        and len(name) <= _NAME_SIZE
        and len(link) <= _NAME_SIZE
        and len(uname) <= 32
        and len(gname) <= 32
        and _is_ascii(name + link + uname + gname)
        and 0 <= h.uid < _MAX_OCT8
        and 0 <= h.gid < _MAX_OCT8
        and 0 <= h.size < _MAX_OCT12
        and 0 <= h.mtime < _MAX_OCT12
        and 0 <= h.mode < _MAX_OCT8
        and 0 <= h.devmajor < _MAX_OCT8
        and 0 <= h.devminor < _MAX_OCT8
    ):
        return _main_block(h, name, b"", link, uname, gname)

    if h.type in (TYPE_REG, TYPE_CHAR, TYPE_BLOCK, TYPE_FIFO) and name.endswith(b"/"):
        raise FormatError(f"tar entry {name!r}: file name may not have a trailing slash")
    if h.size < 0:
        raise FormatError(f"tar entry {name!r}: negative size")

    ustar_ok = True
    pax: dict[bytes, bytes] = {}

    def check_string(s: bytes, width: int, key: bytes) -> None:
        nonlocal ustar_ok
        if not _is_ascii(s) or len(s) > width:
            if key != b"path" or split_ustar_path(s) is None:
                ustar_ok = False
            pax[key] = s

    check_string(name, _NAME_SIZE, b"path")
    check_string(link, _NAME_SIZE, b"linkpath")
    check_string(uname, 32, b"uname")
    check_string(gname, 32, b"gname")

    for label, value, limit in (
        ("mode", h.mode, _MAX_OCT8),
        ("devmajor", h.devmajor, _MAX_OCT8),
        ("devminor", h.devminor, _MAX_OCT8),
    ):
        if not 0 <= value < limit:
            # Go falls back to GNU base-256 here; apko never produces such headers.
            raise FormatError(f"tar entry {name!r}: {label} {value} does not fit USTAR or PAX")
    for key, value, limit in (
        (b"uid", h.uid, _MAX_OCT8),
        (b"gid", h.gid, _MAX_OCT8),
        (b"size", h.size, _MAX_OCT12),
        (b"mtime", h.mtime, _MAX_OCT12),
    ):
        if not 0 <= value < limit:
            ustar_ok = False
            pax[key] = b"%d" % value

    if h.pax or h.xattrs:
        ustar_ok = False
        for k, v in h.pax.items():
            pax[_b(k)] = _b(v)
        for k, v in h.xattrs.items():
            pax[b"SCHILY.xattr." + _b(k)] = _b(v)

    if ustar_ok:
        split = split_ustar_path(name)
        prefix = b""
        if split is not None:
            prefix, name = split
        return _main_block(h, name, prefix, link, uname, gname)

    for k, v in pax.items():
        if not k or b"=" in k:
            raise FormatError(f"tar entry {name!r}: invalid PAX key {k!r}")
        if b"\x00" in (v if k in (b"path", b"linkpath", b"uname", b"gname") else k):
            raise FormatError(f"tar entry {name!r}: NUL byte in PAX record {k!r}")
    body = b"".join(format_pax_record(k, pax[k]) for k in sorted(pax))
    main = _main_block(
        h, _to_ascii(name), b"", _to_ascii(link), _to_ascii(uname), _to_ascii(gname)
    )
    return _raw_pax_block(pax_header_name(name), len(body)) + body + padding(len(body)) + main


def padding(size: int) -> bytes:
    """Zero bytes that follow `size` bytes of entry data to reach a 512-byte boundary."""
    return _PADS[-size % BLOCK]


def file_entry(name: str, content: bytes, mode: int = 0o644, mtime: int = 0,
               uname: str = "", gname: str = "") -> bytes:
    """A whole small regular-file entry owned by 0:0: header, content, padding."""
    return (encode_header(TarHeader(name, TYPE_REG, mode, size=len(content), mtime=mtime,
                                    uname=uname, gname=gname))
            + content + padding(len(content)))


class Writable(Protocol):
    """What TarWriter writes to: a binary file, or anything with its `write`."""

    def write(self, data: bytes | bytearray | memoryview, /) -> object: ...


class TarWriter:
    """Streams entries to a binary file object; `offset` is the bytes written so far."""

    def __init__(self, fileobj: Writable) -> None:
        self._f = fileobj
        self.offset = 0
        self._closed = False

    def add(
        self,
        header: TarHeader,
        data: bytes | bytearray | memoryview | Iterable[bytes] | BinaryIO | None = None,
    ) -> int:
        """Write one entry; returns the offset of its data. `data` must be exactly `size` bytes:
        a bytes-like object, an iterable of chunks, or a readable file positioned at the data."""
        if self._closed:
            raise FormatError("tar writer: add() after close()")
        hdr = encode_header(header)
        write = self._f.write
        write(hdr)
        self.offset += len(hdr)
        data_offset = self.offset
        expected = 0 if header.type in _HEADER_ONLY else header.size
        written = 0
        if data is None:
            pass
        elif isinstance(data, bytes | bytearray | memoryview):
            written = len(data)
            if written:
                write(data)
        elif hasattr(data, "read"):
            remaining = expected
            while remaining:
                chunk = data.read(min(remaining, _COPY_CHUNK))
                if not chunk:
                    break
                write(chunk)
                remaining -= len(chunk)
                written += len(chunk)
        else:
            for chunk in data:
                write(chunk)
                written += len(chunk)
        if written != expected:
            raise FormatError(
                f"tar entry {_b(header.name)!r}: header size {expected} but {written} bytes given"
            )
        pad = _PADS[-written % BLOCK]
        if pad:
            write(pad)
        self.offset += written + len(pad)
        return data_offset

    def close(self) -> None:
        """Write the 1024-byte end marker (no record padding). Does not close the file."""
        if not self._closed:
            self._f.write(END_MARKER)
            self.offset += len(END_MARKER)
            self._closed = True
