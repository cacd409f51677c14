"""An index of the headers of an uncompressed tar (an APK's data section, decompressed).

The optimised stages keep each package's data tar uncompressed in the cache together with this
index, so a hot build reads headers without parsing the tar again and copies file bytes straight
from `data_offset`. Parsing is a single pass over the 512-byte header blocks; PAX extended
headers (`x`, global `g`) and GNU long names (`L`, `K`) are applied to the entry they precede.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction

from builder import limits
from builder.errors import FormatError

BLOCK = 512
_CHECKSUM_KEY = "APK-TOOLS.checksum.SHA1"
_PAX_TIME = re.compile(r"-?[0-9]{1,19}(\.[0-9]{1,30})?", re.ASCII)  # seconds[.fraction]


@dataclass
class TarEntry:
    path: str  # as in the archive, without a leading "./" or trailing "/"
    type: str  # tar typeflag: "0" file, "1" hardlink, "2" symlink, "3"/"4" devices, "5" dir
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    linkname: str
    header_offset: int  # first byte of the entry's first header (PAX/GNU headers included)
    data_offset: int  # first byte of the entry's contents
    uname: str = ""
    gname: str = ""
    devmajor: int = 0
    devminor: int = 0
    checksum: str = ""  # APK-TOOLS.checksum.SHA1 as found (hex or Q1 form), "" if none
    xattrs: dict[str, str] = field(default_factory=dict)
    # False when a PAX header gives a sub-second mtime: `mtime` is then that time rounded to
    # the nearest second, as Go's archive/tar (apko's layer writer) records it.
    mtime_exact: bool = True
    # A PAX global header ("g") is among the entry's own headers: copied verbatim into
    # another tar, it would apply to every later entry there too.
    global_header: bool = False

    @property
    def end_offset(self) -> int:
        """First byte after the entry's padded contents."""
        return self.data_offset + -(-self.size // BLOCK) * BLOCK


@dataclass
class TarIndex:
    entries: list[TarEntry]
    end_offset: int  # where the end-of-archive marker starts (or the data ends)

    def to_json(self) -> bytes:
        return json.dumps({"end": self.end_offset, "entries": [asdict(e) for e in self.entries]},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TarIndex:
        doc = json.loads(raw)
        return cls(entries=[TarEntry(**e) for e in doc["entries"]], end_offset=doc["end"])


def _num(field_: bytes, source: str, offset: int) -> int:
    if field_ and field_[0] & 0x80:  # base-256 (GNU/star) for large values
        value = int.from_bytes(field_[1:], "big")
        return value - (1 << (8 * len(field_) - 1)) if field_[0] & 0x40 else value
    text = field_.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not text.isdigit():  # octal digits only: int() would also take a sign or `_`
        raise FormatError(f"{source}: bad numeric field {field_!r} in tar header at {offset}")
    try:
        return int(text, 8)
    except ValueError:
        raise FormatError(f"{source}: bad numeric field {field_!r} in tar header at {offset}") \
            from None


def _str(field_: bytes) -> str:
    return field_.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(body: bytes, source: str, offset: int) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        if body[pos] == 0:
            break
        space = body.find(b" ", pos)
        if space < 0:
            raise FormatError(f"{source}: malformed PAX record at {offset}")
        try:
            length = int(body[pos:space])
        except ValueError:
            raise FormatError(f"{source}: malformed PAX record at {offset}") from None
        record = body[space + 1: pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise FormatError(f"{source}: malformed PAX record at {offset}")
        key, value = record[:-1].split(b"=", 1)
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _pax_int(pax: dict[str, str], key: str, source: str, offset: int) -> int:
    try:
        return int(pax[key])
    except ValueError:
        raise FormatError(f"{source}: PAX {key} {pax[key][:40]!r} in tar header at {offset} "
                          "is not a number") from None


def _pax_time(value: str, source: str, offset: int) -> tuple[int, bool]:
    """A PAX time ("seconds[.fraction]") -> (whole seconds, rounded half up like Go's
    `Time.Round(time.Second)`; whether it was whole already)."""
    try:
        if not _PAX_TIME.fullmatch(value):  # Fraction() would take 1e999999999 (a hang)
            raise ValueError(value)
        exact = Fraction(value)
    except (ValueError, ZeroDivisionError):
        raise FormatError(f"{source}: bad PAX time {value!r} in tar header at {offset}") \
            from None
    return math.floor(exact + Fraction(1, 2)), exact.denominator == 1


def _clean(path: str) -> str:
    while path.startswith("./"):
        path = path[2:]
    return path.rstrip("/") if path != "/" else path


def index_tar(buf: bytes | memoryview, source: str = "tar") -> TarIndex:
    """Parse every header of the tar in `buf` (no data is copied)."""
    view = memoryview(buf)
    size = len(view)
    entries: list[TarEntry] = []
    global_pax: dict[str, str] = {}
    pending_pax: dict[str, str] = {}
    long_name: str | None = None
    long_link: str | None = None
    saw_global = False
    pos = 0
    first_header = 0
    max_entries = limits.current().entries
    while pos + BLOCK <= size:
        header = bytes(view[pos: pos + BLOCK])
        if header == b"\0" * BLOCK:
            break
        stored = _num(header[148:156], source, pos)
        computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != computed:
            raise FormatError(f"{source}: tar header checksum mismatch at offset {pos}")
        typeflag = chr(header[156]) if header[156] else "0"
        entry_size = _num(header[124:136], source, pos)
        if entry_size < 0:  # base-256 can say so; the walk would step back for ever
            raise FormatError(f"{source}: negative entry size in tar header at byte {pos}")
        data_start = pos + BLOCK
        data_end = data_start + entry_size
        if data_end > size:
            raise FormatError(f"{source}: tar entry {_str(header[0:100])!r} at byte {pos} "
                              f"declares {entry_size} bytes and runs past the end of the "
                              f"archive ({size} bytes)")
        next_pos = data_start + -(-entry_size // BLOCK) * BLOCK
        if next_pos > size:  # a layer reusing the entry would take bytes that are not there
            raise FormatError(f"{source}: tar entry {_str(header[0:100])!r} at byte {pos}: its "
                              f"padding runs past the end of the archive ({size} bytes)")
        if typeflag in ("x", "g"):
            records = _pax_records(bytes(view[data_start:data_end]), source, pos)
            (pending_pax if typeflag == "x" else global_pax).update(records)
            saw_global = saw_global or typeflag == "g"
            pos = next_pos
            continue
        if typeflag in ("L", "K"):
            value = bytes(view[data_start:data_end]).split(b"\0", 1)[0].decode(
                "utf-8", "surrogateescape")
            if typeflag == "L":
                long_name = value
            else:
                long_link = value
            pos = next_pos
            continue
        pax = {**global_pax, **pending_pax}
        name = _str(header[0:100])
        magic = header[257:263]
        if magic.startswith(b"ustar") and header[345]:
            name = _str(header[345:500]) + "/" + name
        name = pax.get("path", long_name or name)
        if "size" in pax:
            try:
                entry_size = int(pax["size"])
            except ValueError:
                raise FormatError(f"{source}: tar entry {name!r} at byte {pos}: PAX size "
                                  f"{pax['size'][:40]!r} is not a number") from None
            data_end = data_start + entry_size
            next_pos = data_start + -(-entry_size // BLOCK) * BLOCK
            if entry_size < 0 or next_pos > size:  # (next_pos: the padding too)
                raise FormatError(f"{source}: tar entry {name!r} at byte {pos} declares "
                                  f"{entry_size} bytes and runs past the end of the archive "
                                  f"({size} bytes)")
        if len(entries) >= max_entries:
            limits.check(source, "number of tar entries", "entries", len(entries) + 1)
        linkname = pax.get("linkpath", long_link or _str(header[157:257]))
        if typeflag == "0" and name.endswith("/"):
            typeflag = "5"
        if "mtime" in pax:
            mtime, mtime_exact = _pax_time(pax["mtime"], source, pos)
        else:
            mtime, mtime_exact = _num(header[136:148], source, pos), True
        entries.append(TarEntry(
            path=_clean(name),
            type=typeflag,
            mode=_num(header[100:108], source, pos) & 0o7777,
            uid=_pax_int(pax, "uid", source, pos) if "uid" in pax
            else _num(header[108:116], source, pos),
            gid=_pax_int(pax, "gid", source, pos) if "gid" in pax
            else _num(header[116:124], source, pos),
            mtime=mtime,
            size=entry_size,
            linkname=linkname,
            header_offset=first_header,
            data_offset=data_start,
            uname=pax.get("uname", _str(header[265:297])),
            gname=pax.get("gname", _str(header[297:329])),
            devmajor=_num(header[329:337], source, pos) if typeflag in "34" else 0,
            devminor=_num(header[337:345], source, pos) if typeflag in "34" else 0,
            checksum=pax.get(_CHECKSUM_KEY, ""),
            xattrs={k[len("SCHILY.xattr."):]: v for k, v in pax.items()
                    if k.startswith("SCHILY.xattr.")},
            mtime_exact=mtime_exact,
            global_header=saw_global,
        ))
        pending_pax = {}
        saw_global = False
        long_name = long_link = None
        pos = next_pos
        first_header = pos
    if pending_pax or long_name or long_link:
        raise FormatError(f"{source}: tar ends inside an extended header")
    return TarIndex(entries=entries, end_offset=pos)
