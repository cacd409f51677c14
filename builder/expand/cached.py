"""The fast `expand` stage: each package's data section is decompressed once, ever, into the
cache next to the package (keyed by the SHA-1 of its control member, what `C:` encodes).

Artefacts per package directory (paths in `builder.repo.cache.ExpandedPaths`): `data.tar`
(the decompressed data section), `tarindex.json` (`TarIndex` as rows), `control.json` (.PKGINFO
fields, control scripts, control SHA-1) and, when asked for, `blocks.json` (DEFLATE block index
of the data section, which the stitched layer needs).
`expand.json`, the manifest, is written LAST and lists each artefact's size and hash; an
artefact that is missing, unlisted or does not match is rebuilt.

Cold (no valid manifest), under an exclusive flock on `.expand.lock` so two builds do the
work once: the compressed data section is hashed (SHA-256, checked against `.PKGINFO`
`datahash`), inflated in bounded pieces straight into a temp file in the cache (every gzip
member) — with ISA-L, or, when the build needs block indexes (`block_index=True`), with
`scan_blocks`, whose single zlib pass both writes the data tar and records the block
boundaries (`blocks.json`) — the temp file is mmap'd, its headers indexed and every regular file's
`APK-TOOLS.checksum.SHA1` checked on memoryview slices of the map (no per-file copies); then
each artefact is committed (temp + fsync + rename) and the manifest last.

Hot: only the `.apk`'s signature and control members are read (a few KiB) to find the key;
the manifest is read, `data.tar` is checked (size; CRC-32 unless its stamp vouches for it),
`control.json` and `tarindex.json` are loaded and checked, and the result points at it. The
data section is never inflated again. Hot loads run on the calling thread with the cyclic
GC paused (JSON parsing holds the GIL); only loads that need a CRC or hash pass, and cold
builds, go to the thread pool.

Decisions:
- Integrity of `data.tar` on a hot load: size every time; CRC-32 (ISA-L, ~6 GB/s here: ~50
  ms for the 331 MB `go` data tar) whenever the file is not the one that last passed it, as
  recorded by its `data.tar.verified` stamp (device, inode, size, mtime, ctime:
  builder/repo/stamp.py explains why that catches any write through the filesystem,
  including a same-size rewrite with the mtime put back). So truncation, an in-place change
  or a torn write is caught and rebuilt; damage below the filesystem is caught only when the
  file changes identity again (or the stamp goes). The small JSON artefacts are checked by
  SHA-256. The manifest is not authenticated (whoever can write the cache can write it); it
  guards against damage, while trust comes from the `.apk` that `fetch` verified: the key
  pins `.PKGINFO`, which pins `datahash`, which pins the data section, so a valid artefact
  set belongs to that `.apk`.
- A package without `datahash` does not pin its data through its key: its data section's
  SHA-256 is recorded in the manifest and re-hashed on every hot load (compressed bytes only,
  still no inflate).
- Block index: `scan_blocks` is a full zlib inflate pass, and only the stitched layer needs
  it. When the build asks for it (`block_index=True`), a cold expand inflates with
  `scan_blocks` instead of ISA-L, writing the data tar from its output: one pass instead of
  ISA-L plus a separate scan (go package, 331 MB out: 0.91 s against 0.48 + 0.85 s). zlib
  alone is slower than ISA-L (0.91 s against 0.48 s), so without `block_index` the fast
  profile keeps ISA-L. An expansion cached without `blocks.json` (made by a build that did
  not ask) is completed by a scan alone (no data tar rewrite) on the pool, and a hot load
  whose manifest lists `blocks.json` never inflates. `FastExpandedPackage.block_index()`
  returns the index (kept from the expand, or read from `blocks.json`, or computed and
  cached on first use).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import mmap
import os
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from isal import isal_zlib

from builder import limits
from builder.apk.layout import ApkLayout, read_layout, read_pkginfo
from builder.apk.model import Package
from builder.apk.pkginfo import pkginfo_to_package
from builder.apk.tarindex import TarEntry, TarIndex, index_tar
from builder.deflate.block_index import BlockIndex, scan_blocks
from builder.deflate.gzipstream import GZIP_MAGIC
from builder.errors import CacheError, FormatError, VerificationError
from builder.expand.codecs import (
    FORMAT,
    block_index_from_json,
    block_index_to_json,
    control_from_json,
    control_to_json,
    tar_index_from_json,
    tar_index_to_json,
)
from builder.expand.model import ControlEntry, ExpandedPackage, verify_file_checksums
from builder.repo import stamp
from builder.repo.cache import (
    EXPANDED_BLOCKS,
    EXPANDED_CONTROL,
    EXPANDED_DATA_TAR,
    EXPANDED_TAR_INDEX,
    VERIFIED_DATA_TAR,
    Cache,
    ExpandedPaths,
)
from builder.util.checksums import q1
from builder.util.filememo import FileMemo
from builder.util.gcpause import paused
from builder.util.workpool import quick_then_pooled

log = logging.getLogger(__name__)

CHUNK = 1 << 19  # compressed bytes fed per decompress call (512 KiB: measured best)
OUT_LIMIT = 1 << 19  # most uncompressed bytes per decompress call (pieces stay in L2)
COPY_CHUNK = 1 << 20
STALE_TMP_SECONDS = 3600  # temp files untouched this long were left by a killed build


def new_decompressor() -> Any:
    """A decompressor for one gzip member (ISA-L). The only place the data section is
    inflated: tests replace it to prove a hot expand never decompresses."""
    return isal_zlib.decompressobj(31)


@dataclass
class FastExpandedPackage(ExpandedPackage):
    """An `ExpandedPackage` whose `data_tar` lives in the cache, with what later stages need
    to reach the original compressed bytes (stitched layers)."""

    apk_path: Path = field(default_factory=Path)
    data_section_offset: int = 0  # first byte of the data section in `apk_path`
    data_section_size: int = 0
    cache_dir: Path = field(default_factory=Path)  # the package's cache directory
    cache_root: Path = field(default_factory=Path)  # the Cache it belongs to
    # The block index once known (made by this expand or loaded): not re-read from JSON.
    known_block_index: BlockIndex | None = field(default=None, repr=False, compare=False)
    # blocks.json's manifest record as the load found it (spares reading the manifest again).
    blocks_record: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def block_index(self) -> BlockIndex:
        """DEFLATE block index of the data section (offsets relative to its first byte):
        the one already known, else from `blocks.json`, else computed and cached."""
        if self.known_block_index is None:
            self.known_block_index = load_or_build_block_index(self)
        return self.known_block_index


class _Stale(Exception):
    """The cached artefacts are missing or do not match their manifest (message says why).
    `other_version`: they were made by an apkimage with another cache format."""

    def __init__(self, message: str, other_version: bool = False) -> None:
        super().__init__(message)
        self.other_version = other_version


class _NotQuick(Exception):
    """A quick load (`_load(quick=True)`) would have to hash or CRC a large file."""


# -- control ---------------------------------------------------------------------------------


def _parse_control(layout: ApkLayout) -> tuple[dict[str, list[str]], list[ControlEntry]]:
    fields, rest = read_pkginfo(layout)
    return fields, [ControlEntry.from_tar(ti, data) for ti, data in rest]


def _package(layout: ApkLayout, fields: dict[str, list[str]]) -> Package:
    pkg = pkginfo_to_package(fields, f"{layout.path}:.PKGINFO")
    pkg.size = layout.size
    pkg.checksum = q1(layout.control_sha1)
    return pkg


def _with_tail_end(index: BlockIndex, section: bytes | memoryview, data_tar: Path,
                   entries: list[TarEntry]) -> BlockIndex:
    """The block index plus the early end just before the package's tar end-of-archive
    marker, where every stitched stream of this package is cut: hot builds then close that
    block from the record instead of inflating it to find the boundary."""
    from builder.deflate.splice import Source, early_end

    if not entries:
        return index
    end = entries[-1].end_offset
    with open(data_tar, "rb") as f, \
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as tar, memoryview(tar) as view:
        found = early_end(Source(compressed=section, index=index, uncompressed=view), end)
    return replace(index, early_ends={end: found}) if found else index


# -- the manifest ----------------------------------------------------------------------------


def _read_manifest(paths: ExpandedPaths) -> dict[str, Any]:
    try:
        raw = paths.manifest.read_bytes()
    except FileNotFoundError:
        raise _Stale("no manifest") from None
    except OSError as exc:
        raise _Stale(f"manifest unreadable: {exc}") from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise _Stale("manifest is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _Stale(f"manifest format {doc.get('format') if isinstance(doc, dict) else '?'}"
                     f", expected {FORMAT}", other_version=isinstance(doc, dict))
    return doc


def _write_manifest(cache: Cache, paths: ExpandedPaths, doc: dict[str, Any]) -> None:
    cache.write_bytes(paths.manifest,
                      json.dumps(doc, separators=(",", ":"), sort_keys=True).encode())


def _read_checked(path: Path, record: dict[str, Any] | None) -> bytes:
    """The bytes of a small artefact, checked against its manifest record (size, SHA-256)."""
    if record is None:
        raise _Stale(f"{path.name} is not in the manifest")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _Stale(f"{path.name}: {exc.strerror or exc}") from None
    if len(raw) != record.get("size") or hashlib.sha256(raw).hexdigest() != record.get("sha256"):
        raise _Stale(f"{path.name} does not match the manifest")
    return raw


def _check_data_tar(path: Path, record: dict[str, Any] | None,
                    stamp_path: Path | None = None, quick: bool = False) -> None:
    """`data.tar` against its manifest record: size always, CRC-32 unless `stamp_path` (a
    `data.tar.verified` stamp, builder/repo/stamp.py) shows this very file (same device,
    inode, size, mtime, ctime) already matched this size and CRC-32. A full pass that
    succeeds writes the stamp; with `quick`, _NotQuick is raised instead of a full pass."""
    if record is None:
        raise _Stale(f"{path.name} is not in the manifest")
    facts = {"size": record.get("size"), "crc32": record.get("crc32")}
    started = stamp.check_started()
    crc = 0
    total = 0
    try:
        with open(path, "rb") as f:
            before = os.fstat(f.fileno())
            if before.st_size != record.get("size"):
                raise _Stale(f"{path.name}: size differs from the manifest")
            if stamp_path is not None and stamp.is_stamped(stamp_path, before, facts):
                return
            if quick:
                raise _NotQuick(path.name)
            buf = bytearray(COPY_CHUNK)
            view = memoryview(buf)
            while n := f.readinto(buf):
                crc = isal_zlib.crc32(view[:n], crc)
                total += n
            after = os.fstat(f.fileno())
    except OSError as exc:
        raise _Stale(f"{path.name}: {exc.strerror or exc}") from None
    if total != record.get("size") or crc != record.get("crc32"):
        raise _Stale(f"{path.name}: content does not match the manifest (CRC-32)")
    if stamp_path is not None:
        stamp.write_stamp(stamp_path, before, after, facts, started)


def _small_record(raw: bytes) -> dict[str, Any]:
    return {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


# -- hot load --------------------------------------------------------------------------------


def _load(layout: ApkLayout, cache: Cache, paths: ExpandedPaths,
          quick: bool = False, block_index: bool = False) -> FastExpandedPackage:
    """The expansion from the cache, or _Stale. Never inflates anything. With `quick`, a
    load that would have to hash or CRC a large file — or, with `block_index`, make the
    block index — raises _NotQuick instead."""
    doc = _read_manifest(paths)
    if doc.get("key") != layout.key:
        raise _Stale("manifest is for another package")
    if doc.get("data_section_size") != layout.data_size:
        raise _Stale("data section size differs from the manifest")
    arts = doc.get("artefacts") or {}
    if quick and block_index and EXPANDED_BLOCKS not in arts:
        raise _NotQuick("no block index")
    tar_record = arts.get(EXPANDED_DATA_TAR)
    # data.tar first: a quick load gives up before parsing anything when it is not stamped.
    _check_data_tar(paths.data_tar, tar_record, paths.dir / VERIFIED_DATA_TAR, quick)
    assert tar_record is not None  # _check_data_tar raised _Stale otherwise
    try:
        fields, control = control_from_json(
            _read_checked(paths.control, arts.get(EXPANDED_CONTROL)))
    except (ValueError, KeyError, TypeError) as exc:
        raise _Stale(f"control info unreadable: {exc}") from None
    pkg = _package(layout, fields)
    if not pkg.datahash:
        if quick:
            raise _NotQuick("no datahash")
        # The key does not pin the data section: compare its hash with the manifest's.
        with open(layout.path, "rb") as f, \
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            got = _sha256_range(mm, layout.control_end, layout.size)
        if got != doc.get("data_section_sha256"):
            raise _Stale("data section differs from the one the artefacts were made from")
    try:
        index = tar_index_from_json(_read_checked(paths.tar_index, arts.get(EXPANDED_TAR_INDEX)))
    except (ValueError, KeyError, TypeError) as exc:
        raise _Stale(f"tar index unreadable: {exc}") from None
    return FastExpandedPackage(
        package=pkg, control_sha1=layout.control_sha1, pkginfo=fields, control=control,
        data_tar=paths.data_tar, entries=index.entries, data_size=int(tar_record["size"]),
        apk_path=layout.path, data_section_offset=layout.control_end,
        data_section_size=layout.data_size, cache_dir=paths.dir, cache_root=cache.root,
        from_cache=True, blocks_record=arts.get(EXPANDED_BLOCKS),
        source=str(layout.path))


def _sha256_range(mm: mmap.mmap, start: int, end: int) -> str:
    view = memoryview(mm)
    try:
        part = view[start:end]
        try:
            return hashlib.sha256(part).hexdigest()
        finally:
            part.release()
    finally:
        view.release()


# -- cold build ------------------------------------------------------------------------------


def _inflate_into(data: memoryview, out: BinaryIO, source: str, base: int) -> tuple[int, int]:
    """Inflate every gzip member of `data` into `out`; returns (bytes written, CRC-32).
    `base` is the offset of `data` in the file, for error messages."""
    n = len(data)
    pos = 0
    total = 0
    crc = 0
    cap = limits.current().data_size
    while pos < n:
        if bytes(data[pos:pos + 2]) != GZIP_MAGIC:
            raise FormatError(f"{source}: not a gzip member at byte {base + pos}")
        start = pos
        d = new_decompressor()
        try:
            while True:
                if pos >= n:
                    raise FormatError(f"{source}: truncated gzip member at byte {base + start}")
                chunk = data[pos:pos + CHUNK]
                pending: memoryview | bytes = chunk
                while True:
                    piece = d.decompress(pending, OUT_LIMIT)
                    if piece:
                        total += len(piece)
                        if total > cap:  # refused as it streams: a bomb is not written out
                            limits.check(source, "inflated data section", "data-size", total)
                        crc = isal_zlib.crc32(piece, crc)
                        out.write(piece)
                    if d.eof:
                        break
                    pending = d.unconsumed_tail
                    if not pending and len(piece) < OUT_LIMIT:
                        break
                if d.eof:
                    pos += len(chunk) - len(d.unused_data)
                    break
                pos += len(chunk)
        # isal's stub declares `error: Exception`, an instance; at run time it is a class
        except (isal_zlib.error, zlib.error) as exc:  # type: ignore[misc]
            raise FormatError(f"{source}: corrupt gzip member at byte {base + start}: "
                              f"{exc}") from None
    return total, crc


def _scan_into(data: memoryview, out: BinaryIO,
               source: str) -> tuple[int, int, BlockIndex]:
    """Inflate every gzip member of `data` into `out` with `scan_blocks`, recording the block
    index in the same pass; returns (bytes written, CRC-32, block index). The output is
    counted against the data-size limit as it streams."""
    cap = limits.current().data_size
    total = 0

    def sink(piece: memoryview) -> None:
        nonlocal total
        total += len(piece)
        if total > cap:  # refused as it streams: a bomb is not written out
            limits.check(source, "inflated data section", "data-size", total)
        out.write(piece)

    index = scan_blocks(data, source, sink)
    crc = 0  # of the whole output, from the per-member CRCs the scan computed anyway
    for m in index.members:
        crc = isal_zlib.crc32_combine(crc, m.crc, m.out_end - m.out_start)
    return index.size, crc, index


def _index_and_verify(tmp_file: BinaryIO, size: int, pkg: Package, source: str) -> TarIndex:
    if size == 0:
        return index_tar(b"", f"{source}:data")
    mm = mmap.mmap(tmp_file.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mm)
    try:
        index = index_tar(view, f"{source}:data")
        verify_file_checksums(view, index.entries, pkg, source)
        return index
    finally:
        view.release()
        with contextlib.suppress(BufferError):  # an exception's frames may still hold slices
            mm.close()


def _build(layout: ApkLayout, cache: Cache, paths: ExpandedPaths,
           block_index: bool = False) -> FastExpandedPackage:
    """Decompress, verify and index the data section (and, with `block_index`, record its
    DEFLATE block index in the same pass); commit the artefacts, manifest last."""
    source = str(layout.path)
    fields, control = _parse_control(layout)
    pkg = _package(layout, fields)
    blocks: BlockIndex | None = None
    with open(layout.path, "rb") as f:
        # A private (copy-on-write, never written) map is a writable buffer: `scan_blocks`
        # hands zlib its address without copying the section.
        mm = mmap.mmap(f.fileno(), 0,
                       access=mmap.ACCESS_COPY if block_index else mmap.ACCESS_READ)
    view = memoryview(mm)
    try:
        data = view[layout.control_end:]
        data_sha256 = hashlib.sha256(data).hexdigest()
        if pkg.datahash and data_sha256 != pkg.datahash:
            raise VerificationError(f"{pkg}: data section SHA-256 {data_sha256} does not match "
                                    f".PKGINFO datahash {pkg.datahash}")
        with cache.atomic(paths.dir) as tmp:
            if block_index:
                size, crc, blocks = _scan_into(data, tmp.file, f"{pkg} ({source}): data section")
            else:
                size, crc = _inflate_into(data, tmp.file, f"{pkg} ({source}): data section",
                                          layout.control_end)
            tmp.file.flush()
            index = _index_and_verify(tmp.file, size, pkg, source)
            tmp.commit(paths.data_tar)
        if blocks is not None:
            blocks = _with_tail_end(blocks, data, paths.data_tar, index.entries)
        data.release()
    finally:
        view.release()
        with contextlib.suppress(BufferError):
            mm.close()
    index_raw = tar_index_to_json(index)
    control_raw = control_to_json(fields, control)
    cache.write_bytes(paths.tar_index, index_raw)
    cache.write_bytes(paths.control, control_raw)
    artefacts = {
        EXPANDED_DATA_TAR: {"size": size, "crc32": crc},
        EXPANDED_TAR_INDEX: _small_record(index_raw),
        EXPANDED_CONTROL: _small_record(control_raw),
    }
    if blocks is not None:
        blocks_raw = block_index_to_json(blocks)
        cache.write_bytes(paths.blocks, blocks_raw)
        artefacts[EXPANDED_BLOCKS] = _small_record(blocks_raw)
    _write_manifest(cache, paths, {
        "format": FORMAT,
        "key": layout.key,
        "datahash": pkg.datahash,
        "data_section_size": layout.data_size,
        "data_section_sha256": data_sha256,
        "artefacts": artefacts,
    })
    return FastExpandedPackage(
        package=pkg, control_sha1=layout.control_sha1, pkginfo=fields, control=control,
        data_tar=paths.data_tar, entries=index.entries, data_size=size,
        apk_path=layout.path, data_section_offset=layout.control_end,
        data_section_size=layout.data_size, cache_dir=paths.dir, cache_root=cache.root,
        from_cache=False, known_block_index=blocks, source=source)


@contextlib.contextmanager
def _locked(paths: ExpandedPaths) -> Iterator[None]:
    """Exclusive flock on the package's lock file (between processes and between threads:
    each call opens its own file description)."""
    try:
        paths.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CacheError(paths.lock, f"cannot lock: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise CacheError(paths.lock, f"cannot lock: {exc.strerror or exc}") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def expand_cached(path: Path, cache: Cache, block_index: bool = False,
                  told: threading.Event | None = None) -> FastExpandedPackage:
    """The expansion of the verified `.apk` at `path`: loaded from the cache when its
    artefacts are valid, else built (once, under the package's lock) and cached. With
    `block_index`, the result's block index is known too: recorded while building, else
    loaded from `blocks.json`, else scanned (an expansion made without it). `told`, shared by
    the packages of one build, is set once artefacts of another cache format were reported,
    so an upgrade gives one line, not one per package."""
    layout = read_layout(path)
    paths = cache.expanded_paths(layout.key)
    try:
        exp = _load(layout, cache, paths)
    except _Stale:
        with _locked(paths):
            try:
                exp = _load(layout, cache, paths)  # another build may have just made it
            except _Stale as again:
                reason = str(again)
                if again.other_version:
                    told = told or threading.Event()
                    if not told.is_set():
                        told.set()
                        log.warning("cache: expansions made by an apkimage with another cache "
                                    "format are rebuilt (e.g. %s: %s)", paths.dir, reason)
                elif reason != "no manifest":
                    log.warning("cache: expansion of %s in %s is stale (%s); rebuilding",
                                path, paths.dir, reason)
                _remove_stale_temps(paths.dir)
                return _build(layout, cache, paths, block_index)
    if block_index:
        exp.block_index()  # outside the lock: load_or_build_block_index takes it to write
    return exp


def _remove_stale_temps(directory: Path) -> None:
    """Delete temp files a killed build left behind (a live writer, this stage's or a
    download's, keeps touching its temp file, so only long-untouched ones go)."""
    now = time.time()
    for p in directory.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > STALE_TMP_SECONDS:
                p.unlink()


def _load_quick(path: Path, cache: Cache, block_index: bool = False) -> FastExpandedPackage:
    """`expand_cached`'s result when it is a load that needs no large read (nor, with
    `block_index`, a scan: the manifest lists `blocks.json`, read later when used); _Stale
    or _NotQuick when it is not."""
    layout = read_layout(path)
    paths = cache.expanded_paths(layout.key)
    files = (path, paths.manifest, paths.data_tar, paths.control, paths.tar_index)
    known, snap = _LOADED.get((str(path), str(cache.root), block_index), files)
    if known is not None:
        return known
    loaded = _load(layout, cache, paths, quick=True, block_index=block_index)
    _LOADED.put(snap, loaded)
    return loaded


# Quick loads made in this process, by package file, cache and block_index, while the package
# and its artefacts are unchanged (builder/util/filememo.py): a long process building many
# images parses each package's manifest, control and tar index once. The object is shared by
# those builds; nothing changes it but `block_index()`, which fills in what it loads.
_LOADED: FileMemo[FastExpandedPackage] = FileMemo()


def expand_packages(paths: dict[str, Path], workdir: Path, cache: Cache | None = None,
                    workers: int | None = None,
                    block_index: bool = False) -> dict[str, ExpandedPackage]:
    """The fast `expand` stage: `expand_cached` for every package. Without a cache, one under
    `workdir` is used (nothing then survives the build). The first failure in package order
    is raised. With `block_index` (the layer will stitch), every package's DEFLATE block
    index is made here, in the same pass as its data tar when that is built.

    Packages whose artefacts load without a large read (stamped data tar) are loaded first,
    on this thread: that is JSON parsing, which holds the GIL, so threads would only add
    switching. The rest — builds, CRC and hash passes — go to a thread pool, largest first
    (ISA-L, hashlib and file I/O release the GIL)."""
    if cache is None:
        cache = Cache(workdir / "expand-cache")
    names = list(paths)
    if not names:
        return {}
    sizes = {}
    for name in names:
        try:
            sizes[name] = paths[name].stat().st_size
        except OSError as exc:
            raise FormatError(f"{paths[name]}: cannot read package: {exc.strerror}") from None
    told = threading.Event()

    def quick(name: str) -> FastExpandedPackage | None:
        try:
            return _load_quick(paths[name], cache, block_index)
        except (_Stale, _NotQuick):
            return None

    with paused():  # tens of thousands of acyclic TarEntry objects (builder/util/gcpause.py)
        got = quick_then_pooled(
            names, quick, lambda name: expand_cached(paths[name], cache, block_index, told),
            size=sizes.__getitem__, workers=workers or os.cpu_count() or 2, name="expand")
    return dict(zip(names, got, strict=True))


# -- block index on demand -------------------------------------------------------------------


def load_or_build_block_index(exp: FastExpandedPackage) -> BlockIndex:
    """`blocks.json` of the package if valid, else `scan_blocks` over its data section, cached
    (file first, then the manifest entry, under the package's lock)."""
    paths = ExpandedPaths(exp.cache_dir)
    try:
        record = exp.blocks_record
        if record is None:  # perhaps added since the load, by another build
            record = (_read_manifest(paths).get("artefacts") or {}).get(EXPANDED_BLOCKS)
        return block_index_from_json(_read_checked(paths.blocks, record))
    except (_Stale, ValueError, KeyError, TypeError):
        pass
    source = f"{exp.apk_path}: data section"
    with open(exp.apk_path, "rb") as f:
        if os.fstat(f.fileno()).st_size < exp.data_section_offset + exp.data_section_size:
            raise FormatError(f"{source}: {exp.apk_path} is shorter than when it was expanded")
        # A private (copy-on-write, never written) map: `scan_blocks` reads it in place.
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as mm, memoryview(mm) as view:
            data = view[exp.data_section_offset:exp.data_section_offset + exp.data_section_size]
            try:
                index = _with_tail_end(scan_blocks(data, source), data, exp.data_tar,
                                       exp.entries)
            finally:
                data.release()
    raw = block_index_to_json(index)
    cache = Cache(exp.cache_root)
    with _locked(paths):
        cache.write_bytes(paths.blocks, raw)
        try:
            doc = _read_manifest(paths)
        except _Stale:
            return index  # the expansion is being rebuilt: its manifest will not list blocks
        if doc.get("key") == exp.control_sha1.hex():
            doc.setdefault("artefacts", {})[EXPANDED_BLOCKS] = _small_record(raw)
            _write_manifest(cache, paths, doc)
    return index
