"""What the `expand` stage produces: a package split into what later stages need (its
rebuilt `Package`, control entries, the decompressed data tar and its header index).

`Stitchable` is what a layer made from the packages' own DEFLATE blocks needs on top: where the
original compressed data section is, and its block index. The fast (cached) expansion provides
it; the reference expansion does not.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from builder.apk.model import Package
from builder.apk.tarindex import TarEntry

if TYPE_CHECKING:
    from builder.deflate.block_index import BlockIndex


@dataclass
class ControlEntry:
    """A control-section entry other than `.PKGINFO` (scripts, `.melange.yaml`...)."""

    name: str
    type: str
    mode: int
    uid: int
    gid: int
    uname: str
    gname: str
    mtime: int
    data: bytes

    @classmethod
    def from_tar(cls, ti: tarfile.TarInfo, data: bytes) -> ControlEntry:
        return cls(ti.name, ti.type.decode(), ti.mode, ti.uid, ti.gid, ti.uname, ti.gname,
                   int(ti.mtime), data)


@dataclass
class ExpandedPackage:
    package: Package  # rebuilt from .PKGINFO; size = .apk size, checksum = Q1 of control SHA-1
    control_sha1: bytes
    pkginfo: dict[str, list[str]]
    control: list[ControlEntry]
    data_tar: Path  # the decompressed data section
    entries: list[TarEntry] = field(default_factory=list)
    data_size: int = 0  # bytes of the decompressed data tar
    from_cache: bool = False  # loaded from an earlier build's artefacts (nothing inflated)
    source: str = ""  # the .apk it was expanded from (named in errors)
    # What later stages work out from the package alone, kept with it (a long process shares
    # one object per package between its builds: builder/expand/cached.py), e.g. install's
    # prepared entries. Not part of the value.
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def who(self) -> str:
        """How errors name the package: `name-version (path of the .apk)`."""
        return f"{self.package} ({self.source})" if self.source else str(self.package)

    def read(self, entry: TarEntry) -> bytes:
        with open(self.data_tar, "rb") as f:
            f.seek(entry.data_offset)
            return f.read(entry.size)


@runtime_checkable
class Stitchable(Protocol):
    """An expanded package whose compressed data section can be reused block by block."""

    package: Package
    data_tar: Path
    entries: list[TarEntry]
    apk_path: Path  # the verified .apk
    data_section_offset: int  # first byte of the data section in `apk_path`
    data_section_size: int

    def block_index(self) -> BlockIndex:
        """DEFLATE block index of the data section (offsets relative to its first byte)."""


def verify_file_checksums(tar: memoryview, entries: list[TarEntry], pkg: Package,
                          source: str) -> None:
    """Every regular file's content (typeflag 0, and 7, contiguous: installed as a regular
    file) against its APK-TOOLS.checksum.SHA1, hashed in place (no copies)."""
    import hashlib

    from builder.errors import VerificationError
    from builder.util.checksums import parse_sha1

    for e in entries:
        if (e.type != "0" and e.type != "7") or not e.checksum:
            continue
        want = parse_sha1(e.checksum)
        if want is None:
            raise VerificationError(f"{pkg} ({source}): {e.path}: malformed "
                                    f"APK-TOOLS.checksum.SHA1 {e.checksum[:60]!r}")
        part = tar[e.data_offset:e.data_offset + e.size]
        got = hashlib.sha1(part).digest()
        part.release()
        if got != want:
            raise VerificationError(f"{pkg} ({source}): {e.path}: content SHA-1 {got.hex()} "
                                    f"does not match APK-TOOLS.checksum.SHA1 {want.hex()}")
