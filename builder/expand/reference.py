"""The reference expansion: the whole `.apk` read, its members split, the data section
inflated with zlib into a file in the build's work directory, its headers indexed and every
regular file's `APK-TOOLS.checksum.SHA1` checked. Nothing is cached."""

from __future__ import annotations

import contextlib
import hashlib
import mmap
from pathlib import Path

from builder.apk.layout import check_apk_size, read_control, tar_members
from builder.apk.pkginfo import pkginfo_to_package
from builder.apk.tarindex import index_tar
from builder.deflate.gzipstream import inflate_member, iter_inflate
from builder.errors import FormatError, VerificationError
from builder.expand.model import ControlEntry, ExpandedPackage, verify_file_checksums
from builder.util.checksums import q1


def expand_one(path: Path, workdir: Path) -> ExpandedPackage:
    """Reference expansion of one `.apk`."""
    import tarfile

    source = str(path)
    blob = path.read_bytes()
    check_apk_size(len(blob), source)
    first, first_end = inflate_member(blob, 0, source)
    try:
        first_items = tar_members(first)
    except tarfile.TarError as exc:
        raise FormatError(f"{source}: first section is not a tar: {exc}") from None
    has_sig = bool(first_items) and first_items[0][0].name.startswith(".SIGN.")
    if has_sig and first_end >= len(blob):
        raise FormatError(f"{source}: signed package without control and data sections")
    if has_sig:
        ctl_start = first_end
        control_raw, ctl_end = inflate_member(blob, ctl_start, source)
    else:
        ctl_start, ctl_end, control_raw = 0, first_end, first
    if ctl_end >= len(blob):
        raise FormatError(f"{source}: expected control and data sections, found no data "
                          "section after the control section")
    # The data section is everything after control (it may span several gzip members).
    data_start, data_end = ctl_end, len(blob)
    control_sha1 = hashlib.sha1(blob[ctl_start:ctl_end]).digest()
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
    out = workdir / f"{pkg.name}-{pkg.version}.{control_sha1.hex()[:12]}.tar"
    # Streamed to the work file (counted against the data-size limit), then mapped: the data
    # tar is never held in memory whole.
    size = 0
    with open(out, "wb") as f:
        for piece in iter_inflate(memoryview(blob)[data_start:data_end],
                                  f"{pkg} ({source}): data section", limit="data-size",
                                  what="inflated data section"):
            f.write(piece)
            size += len(piece)
    del blob
    with open(out, "rb") as f:
        if size == 0:
            index = index_tar(b"", f"{source}:data")
        else:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            view = memoryview(mm)
            try:
                index = index_tar(view, f"{source}:data")
                verify_file_checksums(view, index.entries, pkg, source)
            finally:
                view.release()
                with contextlib.suppress(BufferError):  # an exception's frames may hold slices
                    mm.close()
    return ExpandedPackage(pkg, control_sha1, fields, control, out, index.entries, size,
                           source=source)
