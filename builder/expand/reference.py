"""The reference expansion: the whole `.apk` read, its members split, the data section
inflated with zlib into a file in the build's work directory, its headers indexed and every
regular file's `APK-TOOLS.checksum.SHA1` checked. Nothing is cached."""

from __future__ import annotations

import hashlib
from pathlib import Path

from builder.apk.layout import check_apk_size, read_control, tar_members
from builder.apk.pkginfo import pkginfo_to_package
from builder.apk.tarindex import index_tar
from builder.deflate.gzipstream import inflate_member, iter_inflate, split_members
from builder.errors import FormatError, VerificationError
from builder.expand.model import ControlEntry, ExpandedPackage
from builder.util.checksums import parse_sha1, q1


def expand_one(path: Path, workdir: Path) -> ExpandedPackage:
    """Reference expansion of one `.apk`."""
    import tarfile

    source = str(path)
    blob = path.read_bytes()
    check_apk_size(len(blob), source)
    members = split_members(blob, source)
    if len(members) < 2:
        raise FormatError(f"{source}: expected control and data sections, found "
                          f"{len(members)} gzip member(s)")
    first, _ = inflate_member(blob, members[0][0], source)
    try:
        first_items = tar_members(first)
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
    fields, rest = read_control(control_raw, source)
    control = [ControlEntry.from_tar(ti, data) for ti, data in rest]
    pkg = pkginfo_to_package(fields, f"{source}:.PKGINFO")
    pkg.size = len(blob)
    pkg.checksum = q1(control_sha1)
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
            got_raw = hashlib.sha1(data_tar[e.data_offset:e.data_offset + e.size]).digest()
            if parse_sha1(e.checksum) != got_raw:
                raise VerificationError(f"{pkg}: {e.path}: content SHA-1 does not match "
                                        "APK-TOOLS.checksum.SHA1")
    return ExpandedPackage(pkg, control_sha1, fields, control, out, index.entries,
                           len(data_tar))
