"""Writing `.apk` packages in melange's layout: [signature] + control + data gzip members.

- data: a tar of the filesystem with a PAX `APK-TOOLS.checksum.SHA1` record on regular files,
  symlinks (SHA-1 of the target string) and hard links (SHA-1 of the linked content), ending
  with the 1024-byte end-of-archive marker; one gzip member.
- control: a truncated tar (no end marker) with `.PKGINFO` first, then scripts; `.PKGINFO`
  carries `datahash` (SHA-256 of the compressed data member) and `size` (installed bytes).
- signature: `.SIGN.RSA256.<key_name>` over the compressed control member.

Deterministic: the same input gives the same bytes (entries in the given order, gzip mtime 0).
File contents may be bytes or a callable returning an iterable of chunks, so packages of
hundreds of MB never need to be held uncompressed in memory.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from builder.apk.model import Package
from builder.apk.pkginfo import format_pkginfo, package_to_pkginfo
from builder.apk.signing import sign, signature_member
from builder.deflate.gzipstream import GzipCompressor
from builder.errors import FormatError
from builder.gotar import (
    END_MARKER,
    TYPE_DIR,
    TYPE_LINK,
    TYPE_REG,
    TYPE_SYMLINK,
    TarHeader,
    encode_header,
    file_entry,
    padding,
)

ChunkSource = bytes | bytearray | memoryview | Callable[[], Iterable[bytes]] | Iterable[bytes]
ENTRY_TYPES = {
    "file": TYPE_REG,
    "hardlink": TYPE_LINK,
    "symlink": TYPE_SYMLINK,
    "dir": TYPE_DIR,
}
SCRIPT_NAMES = {
    ".pre-install",
    ".post-install",
    ".pre-upgrade",
    ".post-upgrade",
    ".pre-deinstall",
    ".post-deinstall",
    ".trigger",
}
FLUSH_AT = 1 << 20


@dataclass
class DataEntry:
    """One entry of the data tar. `data` is the content of a regular file: bytes, or a
    callable returning an iterable of chunks (called twice unless `sha1` and `size` are
    given), or a one-shot iterable (buffered in memory unless `sha1` and `size` are given)."""

    path: str
    type: str = "file"  # file | dir | symlink | hardlink
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    data: ChunkSource = b""
    linkname: str = ""
    xattrs: dict[str, bytes] = field(default_factory=dict)
    size: int | None = None
    sha1: str | None = None  # hex; computed when None
    uname: str = "root"
    gname: str = "root"


def normalize_path(path: str, what: str = "path") -> str:
    """Relative, slash-separated, no `.`/`..` components, no trailing slash."""
    clean = path.strip("/")
    while clean.startswith("./"):
        clean = clean[2:]
    parts = clean.split("/")
    if not clean or any(p in ("", ".", "..") for p in parts):
        raise FormatError(f"invalid {what} {path!r} in package data")
    return clean


class _Sink:
    """Buffers tar bytes, feeds them to the compressor in large pieces, hashes the output."""

    def __init__(self, level: int, engine: str) -> None:
        self._comp = GzipCompressor(level, engine)
        self._buf = bytearray()
        self.parts: list[bytes] = []
        self.sha256 = hashlib.sha256()

    def _emit(self, out: bytes) -> None:
        if out:
            self.parts.append(out)
            self.sha256.update(out)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) >= FLUSH_AT:
            self._drain()
            self._emit(self._comp.compress(data))
            return
        self._buf += data
        if len(self._buf) >= FLUSH_AT:
            self._drain()

    def _drain(self) -> None:
        if self._buf:
            self._emit(self._comp.compress(self._buf))
            self._buf = bytearray()

    def close(self) -> bytes:
        self._drain()
        self._emit(self._comp.flush())
        return b"".join(self.parts)


def _chunks(entry: DataEntry) -> Iterable[bytes | bytearray | memoryview]:
    src = entry.data
    if isinstance(src, bytes | bytearray | memoryview):
        return (src,)
    if callable(src):
        return src()
    return src


def _digest_and_size(entry: DataEntry) -> tuple[str, int]:
    """SHA-1 hex and size of a regular file's content (first pass for callables)."""
    if entry.sha1 is not None and entry.size is not None:
        return entry.sha1, entry.size
    if not isinstance(entry.data, bytes | bytearray | memoryview) and not callable(entry.data):
        entry.data = b"".join(entry.data)  # a one-shot iterable can only be read once
    h = hashlib.sha1()
    size = 0
    for chunk in _chunks(entry):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def write_data_tar(
    entries: list[DataEntry], level: int = 6, engine: str = "zlib"
) -> tuple[bytes, int]:
    """The gzip'ed data tar and the installed size (sum of regular file sizes)."""
    sink = _Sink(level, engine)
    file_sums: dict[str, str] = {}
    installed = 0
    seen: set[str] = set()
    for entry in entries:
        path = normalize_path(entry.path)
        if path in seen:
            raise FormatError(f"duplicate path {path!r} in package data")
        seen.add(path)
        typeflag = ENTRY_TYPES.get(entry.type)
        if typeflag is None:
            raise FormatError(f"{path}: unknown entry type {entry.type!r}")
        pax: dict[str | bytes, str | bytes] = {}
        size = 0
        linkname = ""
        if entry.type == "file":
            sha1, size = _digest_and_size(entry)
            pax["APK-TOOLS.checksum.SHA1"] = sha1
            file_sums[path] = sha1
            installed += size
        elif entry.type == "symlink":
            if not entry.linkname:
                raise FormatError(f"{path}: symlink without a target")
            linkname = entry.linkname
            pax["APK-TOOLS.checksum.SHA1"] = hashlib.sha1(linkname.encode()).hexdigest()
        elif entry.type == "hardlink":
            linkname = normalize_path(entry.linkname, "hard link target")
            if linkname not in file_sums:
                raise FormatError(f"{path}: hard link to {linkname!r}, not an earlier file")
            pax["APK-TOOLS.checksum.SHA1"] = file_sums[linkname]
        sink.write(encode_header(TarHeader(
            path, typeflag, entry.mode, entry.uid, entry.gid, size, entry.mtime,
            linkname=linkname, uname=entry.uname, gname=entry.gname,
            xattrs={k: v for k, v in entry.xattrs.items()}, pax=pax)))
        if entry.type == "file":
            written = 0
            for chunk in _chunks(entry):
                sink.write(chunk)
                written += len(chunk)
            if written != size:
                raise FormatError(f"{path}: content produced {written} bytes, expected {size}")
            sink.write(padding(size))
    sink.write(END_MARKER)
    return sink.close(), installed


def _pkginfo_fields(pkginfo: dict[str, list[str]] | Package) -> tuple[dict[str, list[str]], bool]:
    """Copy of the fields, and whether the installed size must be computed."""
    if isinstance(pkginfo, Package):
        fields = package_to_pkginfo(pkginfo)
        return fields, pkginfo.installed_size == 0
    fields = {k: list(v) for k, v in pkginfo.items()}
    return fields, "size" not in fields


def build_control(
    fields: dict[str, list[str]],
    scripts: dict[str, bytes],
    mtime: int,
    level: int = 6,
    engine: str = "zlib",
) -> bytes:
    """The gzip'ed control tar: `.PKGINFO` then scripts, truncated (no end marker)."""
    text = format_pkginfo(fields, header="Generated by apkimage").encode()
    parts = [file_entry(".PKGINFO", text, 0o644, mtime, "root", "root")]
    for name, body in scripts.items():
        entry_name = name if name.startswith(".") else "." + name
        if entry_name not in SCRIPT_NAMES:
            raise FormatError(
                f"unknown package script {name!r} (expected one of "
                f"{', '.join(sorted(SCRIPT_NAMES))})"
            )
        parts.append(file_entry(entry_name, body, 0o755, mtime, "root", "root"))
    comp = GzipCompressor(level, engine)
    tar = b"".join(parts)
    return comp.compress(tar) + comp.flush()


def build_apk(
    pkginfo: dict[str, list[str]] | Package,
    entries: list[DataEntry],
    private_pem: bytes | None,
    key_name: str,
    scripts: dict[str, bytes] | None = None,
    level: int = 6,
    engine: str = "zlib",
) -> bytes:
    """A complete `.apk`. `pkginfo` may be parsed `.PKGINFO` fields or a Package; its
    `datahash` is replaced and `size` filled in when absent. Unsigned when `private_pem` is
    None. `key_name` is the public key's file name, e.g. `melange.rsa.pub`."""
    fields, compute_size = _pkginfo_fields(pkginfo)
    for required in ("pkgname", "pkgver"):
        if not fields.get(required):
            raise FormatError(f"package metadata: missing {required}")
    data, installed = write_data_tar(entries, level, engine)
    if compute_size:
        fields["size"] = [str(installed)]
    fields.pop("datahash", None)
    fields["datahash"] = [hashlib.sha256(data).hexdigest()]
    try:
        mtime = int((fields.get("builddate") or ["0"])[-1] or 0)
    except ValueError:
        raise FormatError(
            f"package metadata: builddate is not an integer: {fields['builddate'][-1]!r}"
        ) from None
    control = build_control(fields, dict(scripts or {}), mtime, level, engine)
    if private_pem is None:
        return control + data
    signature = sign(private_pem, control, "sha256")
    return signature_member(key_name, signature, "sha256") + control + data


def entries_from_tree(root: str, mtime: int | None = None) -> list[DataEntry]:
    """DataEntries for a directory tree on disk (sorted walk, directories first, owner 0:0),
    reading file content lazily. `mtime` overrides every entry's mtime when given."""
    out: list[DataEntry] = []
    inodes: dict[tuple[int, int], str] = {}

    def reader(full: str) -> Callable[[], Iterable[bytes]]:
        def chunks() -> Iterable[bytes]:
            with open(full, "rb") as f:
                while block := f.read(FLUSH_AT):
                    yield block

        return chunks

    def walk(rel: str) -> None:
        full_dir = os.path.join(root, rel) if rel else root
        for name in sorted(os.listdir(full_dir)):
            rel_path = posixpath.join(rel, name) if rel else name
            full = os.path.join(full_dir, name)
            st = os.lstat(full)
            when = int(st.st_mtime) if mtime is None else mtime
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                out.append(DataEntry(rel_path, "dir", mode, mtime=when))
                walk(rel_path)
            elif stat.S_ISLNK(st.st_mode):
                out.append(
                    DataEntry(rel_path, "symlink", 0o777, mtime=when, linkname=os.readlink(full))
                )
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in inodes:
                    out.append(
                        DataEntry(rel_path, "hardlink", mode, mtime=when, linkname=inodes[key])
                    )
                    continue
                inodes[key] = rel_path
                out.append(
                    DataEntry(rel_path, "file", mode, mtime=when, data=reader(full), size=None)
                )
            else:
                raise FormatError(f"{full}: unsupported file type for a package")

    walk("")
    return out
