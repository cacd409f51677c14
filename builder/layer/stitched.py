"""The `stitched` layer format: the layer is built from the packages' own DEFLATE blocks.

The tar is package-ordered: each package's data-tar entries, in install order, taken verbatim
from its data section, then one final stretch with everything else the image holds (files apko
makes, the installed db, accounts, paths, keys...) and every directory with its final metadata,
then the end-of-archive marker. Unpacked with the last-entry-wins rule of containerd and umoci,
it gives the same tree as the `sorted` layer of the same build (DESIGN.md invariant 4).

Which entries a package stream keeps is decided against the finished filesystem model
(`builder.fs.memory.MemFs`, whose files point into the cached data tars):

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

`builder.deflate.splice.Stitcher` turns that plan into one gzip member, reusing the original
blocks between cuts and re-compressing only near them.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from builder.deflate.splice import Source, Stitcher
from builder.errors import ApkImageError
from builder.expand.model import ExpandedPackage, Stitchable
from builder.fs.model import FsModel
from builder.gotar import END_MARKER, encode_header, padding
from builder.layer.stitch_plan import Keep, StitchStats, final_entries, plan_package
from builder.layer.tarmap import header_for
from builder.layering import LayerPart, db_entries
from builder.util.hashing import OrderedHasher


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
        self.h = OrderedHasher("digest")

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
                n = os.sendfile(out, fd, offset, left)  # on tmpfs cheaper than copy_file_range
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


class _Releases:
    """Maps (or parts of them) to let go once both hashers have passed them.

    The main thread runs ahead of the hashers by up to `limit` bytes: it plans and stitches
    the next package while the last ones are still being hashed, and only then waits."""

    def __init__(self, hashers: tuple[OrderedHasher, ...], limit: int) -> None:
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


Final = Callable[[set[str], StitchStats], Iterator[bytes]]


def stitch_layer(fs: FsModel, packages: list[ExpandedPackage], out_path: Path,
                 users: dict[int, str], groups: dict[int, str], engine: str = "isal",
                 level: int = 2, final: Final | None = None) -> StitchResult:
    """Write the stitched layer blob for `packages` (fast-expanded, in install order).
    `engine`/`level` compress the few bytes that are not reused. `final(placed, stats)`
    gives the tar bytes after the package streams, end-of-archive marker included (default:
    the image's final stretch, `final_entries`)."""
    if final is None:
        def final(placed: set[str], stats: StitchStats) -> Iterator[bytes]:
            return final_entries(fs, placed, users, groups, stats)
    stitchable: list[Stitchable] = []
    for given in packages:
        if not isinstance(given, Stitchable):
            raise ApkImageError(f"layer=stitched: {given.package} was not expanded by the "
                                "fast expand stage (it needs the cached data sections)")
        stitchable.append(given)
    stats = StitchStats()
    placed: set[str] = set()
    diff = OrderedHasher("diffid")
    size = 0
    out = _HashingFile(out_path)
    releases = _Releases((diff, out.h), limit=2 * CHUNK)
    try:
        stitcher = Stitcher(out.write, level, engine)
        for exp in stitchable:
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
        for chunk in final(placed, stats):
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


# Bytes of data tar stitched and hashed between page releases; the hashers may run two such
# chunks behind. Hot go: 64 MiB -> 218 MB peak RSS, 32 -> 133 MB, 16 -> 103 MB, with no
# significant change in time (apkperf compare, 7 pairs each).
CHUNK = 32 << 20


def _source(stack: ExitStack, exp: Stitchable) -> _Mapped:
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


def placed_by(fs: FsModel, packages: list[ExpandedPackage], users: dict[int, str],
              groups: dict[int, str]) -> set[str]:
    """The paths `packages`' streams place (decided from their tar indexes alone)."""
    placed: set[str] = set()
    for exp in packages:
        if not isinstance(exp, Stitchable):
            raise ApkImageError(f"layer=stitched: {exp.package} was not expanded by the fast "
                                "expand stage (it needs the cached data sections)")
        plan_package(fs, exp.package.name, exp.data_tar, exp.entries, users, groups, placed,
                     StitchStats(), pieces=False)
    return placed


def stitch_part(fs: FsModel, packages: list[ExpandedPackage], part: LayerPart, out_path: Path,
                users: dict[int, str], groups: dict[int, str], engine: str,
                level: int) -> StitchResult:
    """One layer of a layered image in the stitched format. A package layer: its packages'
    streams (kept entries as in the one-layer format), then its partial installed db with the
    db's directories. The top layer: the final stretch alone — every directory and every node
    no package layer placed (a hard link whose target is in another layer is placed here)."""
    group = part.group
    if group is not None:
        mine = [e for e in packages if e.package.name in group.packages]

        def db(placed: set[str], stats: StitchStats) -> Iterator[bytes]:
            for e in db_entries(fs.meta, group, part.partial_db):
                stats.final_entries += 1
                yield encode_header(header_for(e.path, e.meta, users, groups))
                if e.content:
                    yield e.content
                    yield padding(len(e.content))
            yield END_MARKER

        return stitch_layer(fs, mine, out_path, users, groups, engine, level, final=db)
    placed: set[str] = set()
    for g in part.groups:  # each layer's streams decide on their own (as each layer did)
        placed |= placed_by(fs, [e for e in packages if e.package.name in g.packages], users,
                            groups)

    def rest(_placed: set[str], stats: StitchStats) -> Iterator[bytes]:
        return final_entries(fs, placed, users, groups, stats)

    return stitch_layer(fs, [], out_path, users, groups, engine, level, final=rest)
