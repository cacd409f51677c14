"""Writing tar headers ourselves (USTAR, PAX only when needed or asked for), so that packages
and indexes come out byte-for-byte reproducible and with exactly the end marker we choose
(`tarfile` pads archives to 10240 bytes and picks its own PAX/GNU encodings)."""

from __future__ import annotations

import posixpath

BLOCK = 512
END_OF_ARCHIVE = b"\0" * 1024

REGTYPE = b"0"
LNKTYPE = b"1"
SYMTYPE = b"2"
CHRTYPE = b"3"
BLKTYPE = b"4"
DIRTYPE = b"5"
FIFOTYPE = b"6"
XHDTYPE = b"x"


def padding(size: int) -> bytes:
    """Zero bytes that pad `size` bytes of content to a whole 512-byte block."""
    return b"\0" * (-size % BLOCK)


def _octal(value: int, width: int) -> bytes | None:
    """`width-1` octal digits and a NUL, or None when the value does not fit."""
    if value < 0 or value >= 8 ** (width - 1):
        return None
    return b"%0*o\0" % (width - 1, value)


def _ascii_fits(text: str, width: int) -> bytes | None:
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    return raw if len(raw) <= width else None


def _split_name(name: str) -> tuple[bytes, bytes] | None:
    """(prefix, name) for USTAR, or None when the path does not fit."""
    raw = _ascii_fits(name, 256)
    if raw is None:
        return None
    if len(raw) <= 100:
        return b"", raw
    # Split at a slash so that prefix <= 155 and name <= 100.
    for i in range(min(len(raw) - 1, 155), 0, -1):
        if raw[i : i + 1] == b"/" and len(raw) - i - 1 <= 100 and len(raw) - i - 1 > 0:
            return raw[:i], raw[i + 1 :]
    return None


def pax_records(records: dict[str, str | bytes]) -> bytes:
    """PAX extended header body: `"<len> key=value\\n"` records sorted by key, where <len>
    counts the whole record including its own digits. Bytes values (xattrs) go in raw."""
    out = []
    for key in sorted(records):
        value = records[key]
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
        body = b" " + key.encode() + b"=" + raw + b"\n"
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length = len(str(length)) + len(body)
        out.append(str(length).encode() + body)
    return b"".join(out)


def _raw_header(
    prefix: bytes,
    name: bytes,
    mode: bytes,
    uid: bytes,
    gid: bytes,
    size: bytes,
    mtime: bytes,
    typeflag: bytes,
    linkname: bytes,
    uname: bytes,
    gname: bytes,
    devmajor: bytes,
    devminor: bytes,
) -> bytes:
    hdr = bytearray(BLOCK)

    def put(offset: int, width: int, value: bytes) -> None:
        hdr[offset : offset + len(value[:width])] = value[:width]

    put(0, 100, name)
    put(100, 8, mode)
    put(108, 8, uid)
    put(116, 8, gid)
    put(124, 12, size)
    put(136, 12, mtime)
    put(148, 8, b" " * 8)
    put(156, 1, typeflag)
    put(157, 100, linkname)
    put(257, 6, b"ustar\0")
    put(263, 2, b"00")
    put(265, 32, uname)
    put(297, 32, gname)
    put(329, 8, devmajor)
    put(337, 8, devminor)
    put(345, 155, prefix)
    put(148, 8, b"%06o\0 " % sum(hdr))
    return bytes(hdr)


def header(
    name: str,
    typeflag: bytes = REGTYPE,
    size: int = 0,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 0,
    linkname: str = "",
    uname: str = "",
    gname: str = "",
    devmajor: int = 0,
    devminor: int = 0,
    pax: dict[str, str | bytes] | None = None,
) -> bytes:
    """Header block(s) for one entry: an optional PAX extended header (the given `pax` records
    plus whatever does not fit USTAR) followed by the USTAR header."""
    records: dict[str, str | bytes] = dict(pax or {})
    split = _split_name(name)
    if split is None:
        records["path"] = name
        split = (b"", name.encode("utf-8", "replace")[:100])
    link = _ascii_fits(linkname, 100)
    if link is None:
        records["linkpath"] = linkname
        link = b""
    numbers = {}
    for key, value, width in (
        ("uid", uid, 8),
        ("gid", gid, 8),
        ("size", size, 12),
        ("mtime", mtime, 12),
    ):
        enc = _octal(value, width)
        if enc is None:
            records[key] = str(value)
            enc = _octal(0, width)
        numbers[key] = enc
    names = {}
    for key, value in (("uname", uname), ("gname", gname)):
        enc = _ascii_fits(value, 32)
        if enc is None:
            records[key] = value
            enc = b""
        names[key] = enc
    main = _raw_header(
        split[0],
        split[1],
        _octal(mode & 0o7777777, 8) or b"",
        numbers["uid"],
        numbers["gid"],
        numbers["size"],
        numbers["mtime"],
        typeflag,
        link,
        names["uname"],
        names["gname"],
        _octal(devmajor, 8) or b"",
        _octal(devminor, 8) or b"",
    )
    if not records:
        return main
    body = pax_records(records)
    dirname, base = posixpath.split(name.rstrip("/"))
    pax_name = posixpath.join(dirname, "PaxHeaders.0", base)
    pax_name_raw = pax_name.encode("ascii", "replace")[:100]
    zero8 = _octal(0, 8) or b""
    zero12 = _octal(0, 12) or b""
    xhdr = _raw_header(
        b"",
        pax_name_raw,
        zero8,
        zero8,
        zero8,
        _octal(len(body), 12) or b"",
        zero12,
        XHDTYPE,
        b"",
        b"",
        b"",
        zero8,
        zero8,
    )
    return xhdr + body + padding(len(body)) + main


def file_entry(
    name: str,
    content: bytes,
    mode: int = 0o644,
    mtime: int = 0,
    uname: str = "root",
    gname: str = "root",
) -> bytes:
    """A whole small regular-file entry (header, content, padding), owned by 0:0."""
    return (
        header(name, REGTYPE, len(content), mode, 0, 0, mtime, uname=uname, gname=gname)
        + content
        + padding(len(content))
    )
