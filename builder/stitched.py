"""The `stitched` layer format: the layer is built from the packages' own DEFLATE blocks.

The tar is package-ordered: each package's data-tar entries, in install order, taken verbatim
from its data section, then one final stretch with everything else the image holds (files apko
makes, the installed db, accounts, paths, keys...) and every directory with its final metadata,
then the end-of-archive marker. Unpacked with the last-entry-wins rule of containerd and umoci,
it gives the same tree as the `sorted` layer of the same build (DESIGN.md invariant 4).

Which entries a package stream keeps is decided against the finished filesystem model
(`builder.memfs.MemFs`, whose files point into the cached data tars):

- a file, symlink, hardlink or device is kept when it is the *winner* — the model's node at
  that path came from exactly this tar entry — and its header already says what the image
  must hold (path in canonical form, mode, owner, mtime, link target, xattrs); a winner whose
  header differs (apko flattens owners to 0:0, `paths` may change modes, a package path
  through a symlinked directory, a sub-second PAX mtime that the image rounds to whole
  seconds) gets a rewritten header: a cut, the content is still reused;
- every other non-directory entry (one a later package replaces, one an earlier package
  keeps, the APKv1 leading control files) is cut out, and so is a hard link whose target's
  winning entry is not before it in the stream (e.g. a target whose content `paths`
  replaced): the final stretch writes both;
- a directory entry is kept when the model has a directory at that very path (its final
  metadata is re-emitted at the end anyway), else cut (e.g. a `lib` directory where the image
  has the usrmerge symlink `lib -> usr/lib`);
- the package's end-of-archive marker is always cut.

`builder.deflate_stitch.Stitcher` turns that plan into one gzip member, reusing the original
blocks between cuts and re-compressing only near them.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from builder.apk.tarindex import TarEntry
from builder.deflate_stitch import Source, Stitcher
from builder.errors import ApkImageError, FormatError
from builder.fsroot import (
    DIR,
    FILE,
    HARDLINK,
    SYMLINK,
    Extent,
    FsModel,
    Meta,
    name_key,
    read_extent,
)
from builder.gotar import END_MARKER, encode_header, padding

_KINDS = {"0": FILE, "7": FILE, "1": HARDLINK, "2": SYMLINK, "3": "char", "4": "block",
          "5": DIR, "6": "fifo"}


@dataclass
class Keep:
    """Reuse bytes [start, end) of the package's data tar."""

    start: int
    end: int


@dataclass
class Header:
    """New header bytes for a winner whose own header differs; its content follows as Keep."""

    data: bytes


@dataclass
class StitchStats:
    entries_kept: int = 0
    entries_rewritten: int = 0
    entries_cut: int = 0
    final_entries: int = 0


def _canonical(fs: FsModel, path: str) -> str | None:
    # Fast path: a key of the model is canonical (install stores nodes only under canonical
    # paths and drops a directory's children when it is replaced), so it needs no resolving.
    if path in fs.meta:
        return path
    try:
        return fs.resolve(fs.check_entry_name(path, "stitch"), follow=False, who="stitch")
    except FormatError:
        return None


def _same_header(e: TarEntry, canon: str, m: Meta) -> bool:
    return (e.path == canon and (e.mode & 0o7777) == m.mode and e.uid == m.uid
            and e.gid == m.gid and e.mtime == m.mtime and e.mtime_exact
            and e.xattrs == m.xattrs)


def plan_package(fs: FsModel, package: str, data_tar: Path, entries: list[TarEntry],
                 users: dict[int, str], groups: dict[int, str], placed: set[str],
                 stats: StitchStats) -> list[Keep | Header]:
    """The pieces of one package's stream; adds the canonical paths it places to `placed`.
    Decided from the tar index alone: the data tar itself is not read."""
    from builder.stages.layer import header_for

    plan: list[Keep | Header] = []

    def keep(start: int, end: int) -> None:
        if plan and isinstance(plan[-1], Keep) and plan[-1].end == start:
            plan[-1].end = end
        else:
            plan.append(Keep(start, end))

    for e in entries:
        canon = _canonical(fs, e.path)
        m = fs.meta.get(canon) if canon else None
        kind = _KINDS.get(e.type)
        if m is None or kind is None:
            stats.entries_cut += 1
            continue
        if kind == DIR:
            if m.kind == DIR and canon == e.path and not e.global_header:
                keep(e.header_offset, e.end_offset)
                stats.entries_kept += 1
            else:
                stats.entries_cut += 1
            continue
        if m.kind != kind or not _is_winner(fs, canon, m, e, package, data_tar) or \
                (kind == HARDLINK and m.linkname not in placed):
            # (A hard link is kept only after its target's final entry: else it would link
            # to nothing, or to content a later entry replaces. The final stretch has it.)
            stats.entries_cut += 1
            continue
        placed.add(canon)
        if _same_header(e, canon, m) and not e.global_header:
            keep(e.header_offset, e.end_offset)
            stats.entries_kept += 1
        else:
            plan.append(Header(encode_header(header_for(canon, m, users, groups))))
            if kind == FILE and e.size:
                keep(e.data_offset, e.end_offset)
            stats.entries_rewritten += 1
    return plan


def _is_winner(fs: FsModel, canon: str, m: Meta, e: TarEntry, package: str,
               data_tar: Path) -> bool:
    """Whether the model's node at `canon` was made by exactly this tar entry."""
    if m.kind == FILE:
        content = fs.content(canon)
        return (isinstance(content, Extent)
                and (content.path is data_tar or content.path == data_tar)
                and content.offset == e.data_offset and content.size == e.size)
    if m.package != package or m.mtime != e.mtime:
        return False
    if m.kind == SYMLINK:
        return m.linkname == e.linkname
    if m.kind == HARDLINK:
        return m.linkname == _canonical(fs, e.linkname)
    return m.devmajor == e.devmajor and m.devminor == e.devminor


def final_entries(fs: FsModel, placed: set[str], users: dict[int, str],
                  groups: dict[int, str], stats: StitchStats) -> Iterator[bytes]:
    """Tar bytes of the final stretch: every directory, and every node no package stream
    placed, in the sorted layer's order; then the end-of-archive marker."""
    from builder.stages.layer import header_for, layer_walk

    # Only this part of the walk: the order of a sorted pre-order walk is the order of the
    # paths' component lists.
    rest = sorted((p for p, m in fs.meta.items() if m.kind == DIR or p not in placed),
                  key=lambda p: [name_key(c) for c in p.split("/")])
    files = [p for p in placed if fs.meta[p].kind == FILE]
    for path, m in layer_walk(fs, files, ((p, fs.meta[p]) for p in rest)):
        stats.final_entries += 1
        yield encode_header(header_for(path, m, users, groups))
        if m.kind == FILE and m.size:
            content = fs.content(path)
            yield read_extent(content) if isinstance(content, Extent) else content
            yield padding(m.size)
    yield END_MARKER


@dataclass
class StitchResult:
    diff_id: str
    size: int  # uncompressed tar bytes
    digest: str  # of the gzip blob
    blob_size: int
    stats: StitchStats
    reused_bytes: int
    recompressed_in: int
    recompressed_out: int


class _HashingFile:
    """The blob file; its SHA-256 is computed on its own thread, in write order."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.h = _OrderedHasher("digest")

    def write(self, data: bytes | memoryview, origin: tuple[int, int] | None = None) -> None:
        """Append `data`; a large run with an `origin` (the same bytes in another file) is
        copied file to file by the kernel, not through this process's memory."""
        self.h.update(data)
        if origin is None or len(data) < _COPY_MIN:
            self.f.write(data)
            return
        self.f.flush()
        fd, offset = origin
        out = self.f.fileno()
        left = len(data)
        while left:
            try:
                n = os.copy_file_range(fd, out, left, offset)
            except OSError as exc:
                if exc.errno not in _NO_COPY_RANGE:
                    raise
                n = 0
            if n <= 0:  # not supported here (or nothing copied): write the rest from memory
                self.f.write(memoryview(data)[len(data) - left:])
                return
            offset += n
            left -= n

    def close(self) -> None:
        self.h.close()
        self.f.close()


_COPY_MIN = 256 << 10  # smaller runs are written from memory
_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}
_SMALL = 64 << 10  # smaller buffers are gathered and hashed in batches of about _BATCH
_BATCH = 1 << 20


class _OrderedHasher:
    """SHA-256 fed on one worker thread, in submission order: the diffID is hashed on the
    second core while the main thread stitches (hashlib releases the GIL on large buffers).
    Buffers handed over must stay valid until `mark()`'s future completes."""

    def __init__(self, name: str) -> None:
        self._h = hashlib.sha256()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._last: Future | None = None
        self._small = bytearray()  # copies of small buffers, not yet handed to the thread

    def update(self, data: bytes | memoryview) -> None:
        if len(data) < _SMALL:
            self._small += data
            if len(self._small) >= _BATCH:
                self._submit_small()
            return
        self._submit_small()
        self._last = self._pool.submit(self._hash, [data])

    def _hash(self, box: list[bytes | memoryview]) -> None:
        # The buffer is dropped before the future completes, so a map whose hashing is done
        # has no view left on it and can be closed.
        self._h.update(box.pop())

    def _submit_small(self) -> None:
        if self._small:
            # Handed over as it is (no copy); a new buffer gathers the next batch.
            self._last = self._pool.submit(self._hash, [self._small])
            self._small = bytearray()

    def mark(self) -> Future | None:
        """A future done once everything handed over so far is hashed."""
        self._submit_small()
        return self._last

    def hexdigest(self) -> str:
        last = self.mark()
        if last is not None:
            last.result()
        return self._h.hexdigest()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _Releases:
    """Maps (or parts of them) to let go once both hashers have passed them.

    The main thread runs ahead of the hashers by up to `limit` bytes: it plans and stitches
    the next package while the last ones are still being hashed, and only then waits."""

    def __init__(self, hashers: tuple[_OrderedHasher, ...], limit: int) -> None:
        self._hashers = hashers
        self._limit = limit
        self._queue: deque[tuple[list[Future], Callable[[], object], int]] = deque()
        self._bytes = 0

    def add(self, release: Callable[[], object], nbytes: int) -> None:
        futures = [f for f in (h.mark() for h in self._hashers) if f is not None]
        self._queue.append((futures, release, nbytes))
        self._bytes += nbytes
        while self._queue and (self._bytes > self._limit
                               or all(f.done() for f in self._queue[0][0])):
            self._release_oldest()

    def _release_oldest(self) -> None:
        futures, release, nbytes = self._queue.popleft()
        for f in futures:
            f.result()
        self._bytes -= nbytes
        release()

    def release_all(self) -> None:
        """Wait for the hashers and let go of everything (also after an error)."""
        while self._queue:
            futures, release, _ = self._queue.popleft()
            wait(futures)
            release()


def stitch_layer(fs: FsModel, packages: list, out_path: Path, users: dict[int, str],
                 groups: dict[int, str], engine: str = "isal", level: int = 2
                 ) -> StitchResult:
    """Write the stitched layer blob for `packages` (fast-expanded, in install order).
    `engine`/`level` compress the few bytes that are not reused."""
    from builder.stages.expand_cache import FastExpandedPackage

    for exp in packages:
        if not isinstance(exp, FastExpandedPackage):
            raise ApkImageError(f"layer=stitched: {exp.package} was not expanded by the fast "
                                "expand stage (it needs the cached data sections)")
    stats = StitchStats()
    placed: set[str] = set()
    diff = _OrderedHasher("diffid")
    size = 0
    out = _HashingFile(out_path)
    releases = _Releases((diff, out.h), limit=2 * CHUNK)
    try:
        stitcher = Stitcher(out.write, level, engine)
        for exp in packages:
            stack = ExitStack()
            try:
                mapped = _source(stack, exp)
                src = mapped.src
                tar = src.uncompressed
                plan = plan_package(fs, exp.package.name, exp.data_tar, exp.entries, users,
                                    groups, placed, stats)
                mapped.tar.madvise(mmap.MADV_SEQUENTIAL)
                dropped_to = 0
                for piece in plan:
                    if isinstance(piece, Keep):
                        for a, b in _chunks(src, piece.start, piece.end):
                            diff.update(tar[a:b])
                            stitcher.reuse(src, a, b)
                            size += b - a
                            if b - dropped_to >= CHUNK:  # keep the resident set small
                                releases.add(partial(mapped.drop, dropped_to, b),
                                             b - dropped_to)
                                dropped_to = b
                    else:
                        diff.update(piece.data)
                        stitcher.literal(piece.data)
                        size += len(piece.data)
                stitcher.detach()
            except BaseException:
                releases.add(stack.close, 0)
                raise
            # Unmapped once both hashers are done with it: pages of finished packages
            # leave the process.
            releases.add(stack.close, max(0, src.index.size - dropped_to))
        for chunk in final_entries(fs, placed, users, groups, stats):
            diff.update(chunk)
            stitcher.literal(chunk)
            size += len(chunk)
        stitcher.finish()
        diff_id = "sha256:" + diff.hexdigest()
        blob_digest = out.h.hexdigest()
    except BaseException:
        releases.release_all()
        out.close()
        diff.close()
        out_path.unlink(missing_ok=True)
        raise
    releases.release_all()
    diff.close()
    out.close()
    return StitchResult(
        diff_id=diff_id, size=size, digest="sha256:" + blob_digest,
        blob_size=stitcher.compressed_size, stats=stats, reused_bytes=stitcher.reused_bytes,
        recompressed_in=stitcher.recompressed_in, recompressed_out=stitcher.recompressed_out)


@dataclass
class _Mapped:
    src: Source
    apk: mmap.mmap
    tar: mmap.mmap
    section_offset: int

    def drop(self, start: int, end: int) -> None:
        """Let the pages behind uncompressed bytes [start, end) (and the compressed blocks
        that hold them) leave the process: they are still in the page cache, and are read
        back from it should they be touched again."""
        _drop(self.tar, start, end)
        _drop(self.apk, self.section_offset + self._bit_at(start) // 8,
              self.section_offset + self._bit_at(end) // 8)

    def _bit_at(self, offset: int) -> int:
        """Bit offset of the block holding uncompressed byte `offset`."""
        member = self.src.member_of(min(offset, self.src.index.size - 1))
        i = self.src.last_block_at_or_before(member, offset)
        blocks = self.src.blocks(member)
        return blocks[i].bit if i >= 0 else self.src.index.members[member].data_bit


def _drop(m: mmap.mmap, start: int, end: int) -> None:
    page = mmap.PAGESIZE
    lo = start // page * page
    if end > lo:
        m.madvise(mmap.MADV_DONTNEED, lo, min(end, len(m)) - lo)


def _chunks(src: Source, start: int, end: int) -> Iterator[tuple[int, int]]:
    """[start, end) in pieces of about CHUNK bytes, cut at block boundaries (so the pieces
    stitch exactly as the whole would)."""
    a = start
    while end - a > CHUNK:
        member = src.member_of(a)
        i = src.first_block_at_or_after(member, a + CHUNK)
        blocks = src.blocks(member)
        if i >= len(blocks) or blocks[i].out >= end:
            break
        yield a, blocks[i].out
        a = blocks[i].out
    yield a, end


CHUNK = 64 << 20  # bytes of data tar stitched and hashed between page releases


def _source(stack: ExitStack, exp) -> _Mapped:
    """The package's data section (compressed, from the .apk) and data tar, memory-mapped."""
    def mapped(path: Path) -> tuple[int, mmap.mmap]:
        fd = os.open(path, os.O_RDONLY)
        stack.callback(os.close, fd)  # after the map: the blob writer copies from it
        return fd, stack.enter_context(mmap.mmap(fd, 0, access=mmap.ACCESS_READ))

    apk_fd, apk_map = mapped(exp.apk_path)
    apk = memoryview(apk_map)
    stack.callback(apk.release)
    section = apk[exp.data_section_offset: exp.data_section_offset + exp.data_section_size]
    stack.callback(section.release)
    _, tar_map = mapped(exp.data_tar)
    tar = memoryview(tar_map)
    stack.callback(tar.release)
    src = Source(compressed=section, index=exp.block_index(), uncompressed=tar,
                 name=str(exp.package), origin=(apk_fd, exp.data_section_offset))
    return _Mapped(src, apk_map, tar_map, exp.data_section_offset)
