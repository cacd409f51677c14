"""The image filesystem: one set of path rules (`FsModel`) over two kinds of content storage.

`FsModel` holds the metadata the layer must carry — owners (package content is flattened to
0:0, apko-made homes keep theirs), exact mtimes of directories that are later written into,
character devices, special bits — in `meta`, keyed by the image path (no leading `/`; the root
itself is not tracked), and every rule about paths: symlinks are followed through the table
with chroot semantics (an absolute target is relative to the image root), so no entry can be
created outside the root; `..` that climbs above the root, absolute entry names and symlink
loops are FormatErrors naming the owner and the path. Subclasses only decide where file
contents live:

- `FsRoot` (the reference): a temporary root directory on disk; contents are written on
  install and read back by the layer walk, which lists the disk.
- `builder.fs.memory.MemFs` (the fast build): contents stay where they are — a file node is an
  `Extent` of a package's cached data tar, or bytes the builder wrote.
"""

from __future__ import annotations

import io
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from builder.errors import FormatError
from builder.fs.extent import Content, Extent, ExtentReader, read_extent
from builder.fs.kinds import DIR, FILE, HARDLINK, SYMLINK

_MAX_LINKS = 40
# Linux's limits, as apk-tools applies them: a path or link target of PATH_MAX - 10 bytes
# or more is refused when the tar is read (ENAMETOOLONG); a component longer than NAME_MAX
# cannot be created on any Linux filesystem, so the image could not be unpacked.
PATH_LIMIT = 4096 - 10
NAME_MAX = 255
_READ_BUFFER = 1 << 20


@dataclass(slots=True)
class Meta:
    """What the layer records for one path."""

    kind: str
    mode: int  # permission bits plus setuid/setgid/sticky, no file-type bits
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    linkname: str = ""  # symlink target, or hardlink target (image path, no leading /)
    devmajor: int = 0
    devminor: int = 0
    size: int = 0
    xattrs: dict[str, str] = field(default_factory=dict)
    package: str = ""  # owning package name; "" for entries the builder made itself
    checksum: str = ""  # hex SHA-1 of the content (from the package), "" if unknown


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _check_lengths(name: str, who: str) -> None:
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) >= PATH_LIMIT:
        raise FormatError(f"{who}: path {name[:60]!r}... of {len(raw)} bytes is too long "
                          f"(the limit is {PATH_LIMIT - 1}, as apk-tools's)")
    for part in raw.split(b"/"):
        if len(part) > NAME_MAX:
            shown = part[:40].decode("utf-8", "surrogateescape")
            raise FormatError(f"{who}: path {name[:60]!r}...: component {shown!r}... of "
                              f"{len(part)} bytes is too long (Linux allows {NAME_MAX})")


def name_key(name: str) -> bytes:
    """Sort key of a directory entry name (byte order, as the disk walk sorts)."""
    return os.fsencode(name)


class FsModel:
    """Path rules and metadata of the image filesystem; content storage is the subclass's."""

    # Storage that copies file bytes at install time can use an Extent's open handle.
    uses_fileobj = True

    def __init__(self) -> None:
        self.meta: dict[str, Meta] = {}
        # Canonical form of directory paths already resolved (raw path -> canonical). A
        # resolution depends only on the symlinks in `meta`, so the cache is emptied whenever
        # a symlink appears or may disappear (`symlink`, `_clear`); `meta` changes only
        # through this class's methods.
        self._dirs: dict[str, str] = {}

    # ------------------------------------------------------------------ storage hooks

    def _store_dir(self, canonical: str) -> None:
        raise NotImplementedError

    def _store_file(self, canonical: str, data: bytes | Extent) -> int:
        """Store a regular file's content; returns the number of bytes stored."""
        raise NotImplementedError

    def _store_symlink(self, canonical: str, target: str) -> None:
        raise NotImplementedError

    def _store_hardlink(self, canonical: str, target: str) -> None:
        raise NotImplementedError

    def _store_node(self, canonical: str) -> None:
        raise NotImplementedError

    def _store_remove(self, canonical: str, kind: str) -> None:
        """Drop what is stored at `canonical` (a whole subtree when it is a directory)."""
        raise NotImplementedError

    def content(self, canonical: str) -> Content:
        """Where the bytes of the regular file (or hardlink) `canonical` are."""
        raise NotImplementedError

    def walk(self) -> Iterator[tuple[str, Meta]]:
        """The image tree in layer order: names byte-sorted per directory, each directory
        before its contents, the root omitted."""
        raise NotImplementedError

    # ------------------------------------------------------------------ resolution

    def resolve(self, path: str, *, follow: bool = True, who: str = "builder") -> str:
        """Canonical image path (no symlinks in it, except the last component when
        `follow` is False). Raises FormatError if the path would leave the root.

        Fast path: the parent directory's canonical form comes from a cache, and the last
        component is appended (it is not followed, or it is not a symlink). Anything else —
        a last component that is empty, `.`, `..` or a symlink to follow, a parent that does
        not resolve — takes the full walk, so results and errors are exactly the walk's."""
        parent, _, last = path.rpartition("/")
        if last and last != "." and last != "..":
            pc = self._dirs.get(parent)
            if pc is None:
                pc = self._resolve_dir(parent)
            if pc is not None:
                cur = f"{pc}/{last}" if pc else last
                if not follow:
                    return cur
                m = self.meta.get(cur)
                if m is None or m.kind != SYMLINK:
                    return cur
        return self._walk_resolve(path, follow, who)

    def _resolve_dir(self, path: str) -> str | None:
        """Canonical form of the directory path `path` (cached), None if it does not
        resolve (the caller then repeats the full walk for its own error message)."""
        try:
            c = self._walk_resolve(path, True, "builder")
        except FormatError:
            return None
        self._dirs[path] = c
        return c

    def _walk_resolve(self, path: str, follow: bool, who: str) -> str:
        """`resolve` by walking every component."""
        parts = _split(path)
        done: list[str] = []
        hops = 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                if not done:
                    raise FormatError(f"{who}: path {path!r} escapes the image root")
                done.pop()
                continue
            cur = "/".join(done + [name])
            m = self.meta.get(cur)
            if m is not None and m.kind == SYMLINK and (parts or follow):
                hops += 1
                if hops > _MAX_LINKS:
                    raise FormatError(f"{who}: too many levels of symlinks resolving {path!r}")
                target = m.linkname
                if target.startswith("/"):
                    done = []
                parts = _split(target) + parts
                continue
            done.append(name)
        return "/".join(done)

    def check_link_target(self, target: str, name: str, who: str) -> None:
        """A symlink target longer than Linux allows is refused (FormatError)."""
        if len(target) >= PATH_LIMIT // 4 and \
                len(target.encode("utf-8", "surrogateescape")) >= PATH_LIMIT:
            raise FormatError(f"{who}: symlink {name!r}: target of "
                              f"{len(target.encode('utf-8', 'surrogateescape'))} bytes is "
                              f"too long (the limit is {PATH_LIMIT - 1}, as apk-tools's)")

    def check_entry_name(self, name: str, who: str) -> str:
        """Validate a name from a package: relative, no `..` components, within Linux's
        length limits. Returns it cleaned."""
        if len(name) > NAME_MAX // 4:
            _check_lengths(name, who)
        if (name and name[0] != "/" and name[0] != "." and name[-1] != "/"
                and "//" not in name and "/." not in name):
            return name  # no empty, `.` or `..` component: already clean
        if name.startswith("/"):
            raise FormatError(f"{who}: absolute path {name!r} in package data")
        parts = _split(name)
        if ".." in parts:
            raise FormatError(f"{who}: path {name!r} contains '..' and would escape the root")
        return "/".join(parts)

    def get(self, path: str, *, follow: bool = True) -> Meta | None:
        try:
            return self.meta.get(self.resolve(path, follow=follow))
        except FormatError:
            return None

    def exists(self, path: str, *, follow: bool = True) -> bool:
        return self.get(path, follow=follow) is not None

    def is_dir(self, path: str) -> bool:
        m = self.get(path)
        return m is not None and m.kind == DIR

    # ------------------------------------------------------------------ creation

    def _parent_ok(self, canonical: str, who: str) -> None:
        parent = canonical.rpartition("/")[0]
        if parent:
            m = self.meta.get(parent)
            if m is None or m.kind != DIR:
                raise FormatError(f"{who}: parent of {canonical!r} is not a directory")

    def _clear(self, canonical: str) -> None:
        """Remove whatever is at `canonical` (a directory with everything under it)."""
        m = self.meta.pop(canonical, None)
        if m is None:
            return
        if m.kind == SYMLINK or m.kind == DIR:  # a symlink goes (maybe inside the dir)
            self._dirs.clear()
        if m.kind == DIR:
            prefix = canonical + "/"
            for k in [k for k in self.meta if k.startswith(prefix)]:
                del self.meta[k]
        self._store_remove(canonical, m.kind)

    def mkdir(self, path: str, mode: int = 0o755, *, mtime: int = 0, uid: int = 0,
              gid: int = 0, package: str = "", who: str = "builder",
              xattrs: dict[str, str] | None = None) -> str:
        """Create a directory; an existing one keeps its mode (apk rule) and gets `mtime`."""
        c = self.resolve(path, who=who)
        if not c:
            return c
        m = self.meta.get(c)
        if m is not None and m.kind == DIR:
            m.mtime = mtime
            if xattrs:
                m.xattrs.update(xattrs)
            return c
        self._parent_ok(c, who)
        if m is not None:
            self._clear(c)
        self._store_dir(c)
        self.meta[c] = Meta(DIR, mode, uid, gid, mtime, package=package,
                            xattrs=dict(xattrs or {}))
        return c

    def mkdir_all(self, path: str, mode: int = 0o755, *, mtime: int = 0, uid: int = 0,
                  gid: int = 0, who: str = "builder") -> str:
        """Create missing directories along `path` (existing ones untouched)."""
        done = ""
        for part in _split(path):
            nxt = self.resolve(posixpath.join(done, part) if done else part, who=who)
            if nxt not in self.meta:
                self.mkdir(nxt, mode, mtime=mtime, uid=uid, gid=gid, who=who)
            elif self.meta[nxt].kind != DIR:
                raise FormatError(f"{who}: {nxt!r} exists and is not a directory")
            done = nxt
        return done

    def write_file(self, path: str, data: bytes | Extent, mode: int = 0o644, *,
                   mtime: int = 0, uid: int = 0, gid: int = 0, package: str = "",
                   checksum: str = "", who: str = "builder",
                   xattrs: dict[str, str] | None = None, canonical: str | None = None) -> str:
        """Write a regular file (replacing a non-directory at the path). `data` is the
        content, or an Extent of a data tar. `canonical`, when the caller already has it, is
        `resolve(path, follow=False)` (saves resolving twice)."""
        c = self.resolve(path, follow=False, who=who) if canonical is None else canonical
        if not c:
            raise FormatError(f"{who}: cannot write a file at the image root")
        self._parent_ok(c, who)
        old = self.meta.get(c)
        if old is not None and old.kind == DIR:
            raise FormatError(f"{who}: {c!r} is a directory, cannot replace it with a file")
        self._clear(c)
        written = self._store_file(c, data)
        self.meta[c] = Meta(FILE, mode, uid, gid, mtime, size=written, package=package,
                            checksum=checksum, xattrs=dict(xattrs) if xattrs else {})
        return c

    def symlink(self, path: str, target: str, *, mtime: int | None = None, uid: int = 0,
                gid: int = 0, package: str = "", checksum: str = "",
                who: str = "builder", canonical: str | None = None) -> str:
        """Create a symlink; `mtime=None` copies the parent directory's mtime (apko rule for
        links it creates itself). `canonical`: as for `write_file`."""
        c = self.resolve(path, follow=False, who=who) if canonical is None else canonical
        if not c:
            raise FormatError(f"{who}: cannot replace the image root with a symlink")
        self._parent_ok(c, who)
        old = self.meta.get(c)
        if old is not None and old.kind == DIR:
            raise FormatError(f"{who}: {c!r} is a directory, cannot replace it with a symlink")
        self._clear(c)
        self._store_symlink(c, target)
        if mtime is None:
            mtime = self._parent_mtime(c)
        self.meta[c] = Meta(SYMLINK, 0o777, uid, gid, mtime, linkname=target,
                            package=package, checksum=checksum)
        self._dirs.clear()
        return c

    def hardlink(self, path: str, target: str, *, mtime: int = 0, package: str = "",
                 who: str = "builder", canonical: str | None = None) -> str:
        """A hardlink to an existing regular file `target` (image path). `canonical`: as for
        `write_file`."""
        tc = self.resolve(target, who=who)
        tm = self.meta.get(tc)
        if tm is None or tm.kind not in (FILE, HARDLINK):
            raise FormatError(f"{who}: hardlink {path!r} -> {target!r}: target is not a file")
        if tm.kind == HARDLINK:
            tc = tm.linkname
            tm = self.meta[tc]
        c = self.resolve(path, follow=False, who=who) if canonical is None else canonical
        if c == tc:
            raise FormatError(f"{who}: hardlink {path!r} -> {target!r}: links to itself")
        self._parent_ok(c, who)
        self._clear(c)
        self._store_hardlink(c, tc)
        self.meta[c] = Meta(HARDLINK, tm.mode, tm.uid, tm.gid, mtime, linkname=tc,
                            package=package, checksum=tm.checksum)
        return c

    def mknod(self, path: str, kind: str, major: int, minor: int, mode: int, *,
              mtime: int | None = None, who: str = "builder",
              canonical: str | None = None) -> str:
        """A device or fifo (its numbers live in the metadata). `canonical`: as for
        `write_file`."""
        c = self.resolve(path, follow=False, who=who) if canonical is None else canonical
        self._parent_ok(c, who)
        self._clear(c)
        self._store_node(c)
        if mtime is None:
            mtime = self._parent_mtime(c)
        self.meta[c] = Meta(kind, mode, 0, 0, mtime, devmajor=major, devminor=minor)
        return c

    def _parent_mtime(self, canonical: str) -> int:
        m = self.meta.get(canonical.rpartition("/")[0])
        return m.mtime if m is not None else 0

    def remove(self, path: str) -> None:
        self._clear(self.resolve(path, follow=False))

    # ------------------------------------------------------------------ access

    def _file_meta(self, path: str) -> tuple[str, Meta]:
        c = self.resolve(path)
        m = self.meta.get(c)
        if m is None or m.kind not in (FILE, HARDLINK):
            raise FormatError(f"builder: {path!r} is not a regular file in the image")
        return c, m

    def read(self, path: str) -> bytes:
        c, _ = self._file_meta(path)
        data = self.content(c)
        return read_extent(data) if isinstance(data, Extent) else data

    def open(self, canonical: str) -> BinaryIO:
        """A readable file over the content of the regular file `canonical`."""
        data = self.content(canonical)
        if isinstance(data, Extent):
            return io.BufferedReader(ExtentReader(data), _READ_BUFFER)
        return io.BytesIO(data)
