"""The `expand` stage: split each fetched `.apk` into its sections, decompress the data tar
once (to a file in the build's work directory), verify every regular file's
`APK-TOOLS.checksum.SHA1`, and index the tar headers.

Interface (every implementation): `expand(paths, workdir, cache=None, block_index=False) ->
dict[name, ExpandedPackage]`, where `paths` maps package name -> verified `.apk` path (from
`fetch`), `cache` is the build's `builder.repo.cache.Cache` (the reference does not use it)
and `block_index` says the layer will need each data section's DEFLATE block index (the
stitched layer): the fast expand then records it while decompressing; the reference has no
block indexes (the stitched layer needs the fast expand) and ignores it.

Implementations: `reference` (serial, zlib, data tars written under `workdir`), `fast`
(`builder.stages.expand_cache`: thread pool, ISA-L, data tars decompressed once into the
cache and reused by every later build).
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from builder.apk.gzipstream import inflate_member, iter_inflate, split_members
from builder.apk.model import Package
from builder.apk.pkginfo import parse_pkginfo, pkginfo_to_package
from builder.apk.tarindex import TarEntry, index_tar
from builder.errors import FormatError, VerificationError

if TYPE_CHECKING:
    from builder.repo.cache import Cache


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


@dataclass
class ExpandedPackage:
    package: Package  # rebuilt from .PKGINFO; size = .apk size, checksum = Q1 of control SHA-1
    control_sha1: bytes
    pkginfo: dict[str, list[str]]
    control: list[ControlEntry]
    data_tar: Path  # the decompressed data section
    entries: list[TarEntry] = field(default_factory=list)
    data_size: int = 0  # bytes of the decompressed data tar

    def read(self, entry: TarEntry) -> bytes:
        with open(self.data_tar, "rb") as f:
            f.seek(entry.data_offset)
            return f.read(entry.size)


def _tar_members(raw: bytes, source: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    # Signature and control tars are truncated (no end marker): pad before handing to tarfile.
    out: list[tuple[tarfile.TarInfo, bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(raw + b"\0" * 1024), mode="r:") as tf:
        for ti in tf:
            data = tf.extractfile(ti).read() if ti.isfile() else b""  # type: ignore[union-attr]
            out.append((ti, data))
    return out


def expand_one(path: Path, workdir: Path) -> ExpandedPackage:
    """Reference expansion of one `.apk`."""
    source = str(path)
    blob = path.read_bytes()
    members = split_members(blob, source)
    if len(members) < 2:
        raise FormatError(f"{source}: expected control and data sections, found "
                          f"{len(members)} gzip member(s)")
    first, _ = inflate_member(blob, members[0][0], source)
    try:
        first_items = _tar_members(first, source)
    except tarfile.TarError as exc:
        raise FormatError(f"{source}: first section is not a tar: {exc}") from None
    has_sig = bool(first_items) and first_items[0][0].name.startswith(".SIGN.")
    if has_sig and len(members) < 3:
        raise FormatError(f"{source}: signed package without control and data sections")
    ctl_start, ctl_end = members[1] if has_sig else members[0]
    # The data section is everything after control (it may span several gzip members).
    data_start, data_end = ctl_end, len(blob)
    control_sha1 = hashlib.sha1(blob[ctl_start:ctl_end]).digest()
    control_raw = first if not has_sig else inflate_member(blob, ctl_start, source)[0]
    try:
        control_items = _tar_members(control_raw, source)
    except tarfile.TarError as exc:
        raise FormatError(f"{source}: control section is not a tar: {exc}") from None
    pkginfo_text = None
    control: list[ControlEntry] = []
    for ti, data in control_items:
        if ti.name == ".PKGINFO":
            pkginfo_text = data.decode("utf-8", "replace")
            continue
        control.append(ControlEntry(ti.name, ti.type.decode(), ti.mode, ti.uid, ti.gid,
                                    ti.uname, ti.gname, int(ti.mtime), data))
    if pkginfo_text is None:
        raise FormatError(f"{source}: control section has no .PKGINFO")
    fields = parse_pkginfo(pkginfo_text, f"{source}:.PKGINFO")
    pkg = pkginfo_to_package(fields, f"{source}:.PKGINFO")
    pkg.size = len(blob)
    pkg.checksum = "Q1" + base64.b64encode(control_sha1).decode()
    if pkg.datahash:
        got = hashlib.sha256(blob[data_start:data_end]).hexdigest()
        if got != pkg.datahash:
            raise VerificationError(f"{pkg}: data section SHA-256 {got} does not match "
                                    f".PKGINFO datahash {pkg.datahash}")
    data_tar = b"".join(iter_inflate(memoryview(blob)[data_start:data_end], source))
    out = workdir / f"{pkg.name}-{pkg.version}.{control_sha1.hex()[:12]}.tar"
    out.write_bytes(data_tar)
    index = index_tar(data_tar, f"{source}:data")
    for e in index.entries:
        if e.type == "0" and e.checksum:
            want = e.checksum
            got_raw = hashlib.sha1(data_tar[e.data_offset:e.data_offset + e.size]).digest()
            ok = (base64.b64decode(want[2:]) == got_raw) if want.startswith("Q1") \
                else (want.lower() == got_raw.hex())
            if not ok:
                raise VerificationError(f"{pkg}: {e.path}: content SHA-1 does not match "
                                        "APK-TOOLS.checksum.SHA1")
    return ExpandedPackage(pkg, control_sha1, fields, control, out, index.entries,
                           len(data_tar))


def expand_reference(paths: dict[str, Path], workdir: Path, cache: Cache | None = None,
                     block_index: bool = False) -> dict[str, ExpandedPackage]:
    """Serially expand every package (`cache` and `block_index` are accepted for the
    interface, not used)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return {name: expand_one(p, workdir) for name, p in paths.items()}


def expand_fast(paths: dict[str, Path], workdir: Path, cache: Cache | None = None,
                block_index: bool = False) -> dict[str, ExpandedPackage]:
    """Parallel, decompress-once-into-the-cache expansion (see builder.stages.expand_cache);
    with `block_index`, the block indexes are recorded in the same single pass."""
    from builder.stages.expand_cache import expand_packages

    return expand_packages(paths, workdir, cache, block_index=block_index)


IMPLEMENTATIONS: dict[str, Callable[..., dict[str, ExpandedPackage]]] = {
    "reference": expand_reference,
    "fast": expand_fast,
}
FAST = "fast"
