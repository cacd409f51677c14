"""Debian packages converted to signed APKs: a realistic, runnable benchmark workload.

Pipeline: resolve the dependency closure of the requested packages with `apt-cache depends`
(first installable alternative of each `a | b` group, virtual names through their first
provider, no recommends/suggests), `apt-get download` the `.deb`s into a cache, convert each:

- the `.deb` is an `ar` archive; `control.tar.*` gives the `control` fields and `data.tar.*`
  (xz via `lzma`, gzip via `zlib`, zstd via the `zstd` CLI) the filesystem;
- the data tar is re-emitted by the APK writer (PAX `APK-TOOLS.checksum.SHA1`, gzip) without
  the root `./` entry; maintainer scripts are dropped;
- **usrmerge**: Debian 12 packages still ship files under `/bin`, `/sbin`, `/lib`, `/lib64`.
  Installing through a symlinked directory works in apko (its `MkdirAll` follows the link,
  §1.7) but makes every builder depend on that subtle path, so the converter moves those
  entries to `usr/...` itself (relative symlink targets are re-anchored) and a generated
  `debian-baselayout` package provides the `bin -> usr/bin` ... symlinks. The resulting tree
  is what a merged-/usr Debian system has.
- versions: `[epoch:]upstream[-revision]` → `<leading dotted digits of upstream>[_<pre><n>]
  -r<first number of revision>`, e.g. `1:2.39.2-1.1` → `2.39.2-r1`, `3.0.11-1~deb12u2` →
  `3.0.11-r1`, `2.2.0~rc1-3` → `2.2.0_rc1-r3`. The epoch is dropped: a repository holds one
  version per package, and a constraint that the mapping would make unsatisfiable is dropped
  (and counted in `corpus.json`) rather than turned into a broken dependency;
- dependencies: `Pre-Depends` + `Depends`, first alternative present in the converted set (or
  provided by it), `>>`/`<<` → `>`/`<`; provides: Debian `Provides`, `so:<SONAME>=<ver>` from
  each shared library's ELF dynamic section, `cmd:<name>` for executables in bin dirs;
- two packages shipping the same file: the later one gets `replaces = <earlier>`.

Everything is cached (see `convert_corpus`), so a second run is mostly copying: the closure
by roots + the apt lists' stamp (apt-cache is slow: ~0.7 s a call), `.deb`s by apt's file
name, their SHA-256 by (name, size, mtime), each `.deb`'s data section (parsed and compressed
once — the only costly step) by its SHA-256, and each package's signature + control + index
record by the `.deb` and the final `.PKGINFO` fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import lzma
import os
import posixpath
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from builder.apk.index import index_record_from_apk
from builder.apk.model import Package
from builder.apk.package import read_apk
from builder.apk.signing import load_private_key, signature_member
from builder.apk.writer import DataEntry, build_apk, build_control, write_data_tar
from perf.corpus import (
    ARCH,
    CorpusError,
    CorpusInfo,
    PackageStats,
    RepoWriter,
    derive_rsa_key,
    write_config,
    write_keys,
)

CONVERTER_VERSION = 2
DEFAULT_CACHE = Path(".perf") / "debian-cache"
COMPRESS_ENGINE = "isal"
COMPRESS_LEVEL = 3
PRESETS = {
    "small": ["bash", "coreutils"],
    "go": ["golang-go", "busybox", "bash", "git", "make", "binutils", "gcc", "libc6-dev",
           "openssh-client", "ca-certificates", "coreutils"],
}
USRMERGE = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64",
            "lib32": "usr/lib32", "libx32": "usr/libx32"}
BASELAYOUT = "debian-baselayout"
BIN_DIRS = ("usr/bin/", "usr/sbin/", "usr/games/")
_PRE = re.compile(r"^~(alpha|beta|pre|rc)(\d*)")


# ----------------------------------------------------------------------------- versions


def apk_version(debian_version: str) -> str:
    """Map a Debian version to a valid APK version (see the module docstring)."""
    rest = debian_version.partition(":")[2] if ":" in debian_version else debian_version
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    m = re.match(r"\d+(?:\.\d+)*", upstream)
    nums = m.group(0) if m else "0"
    suffix = ""
    pre = _PRE.match(upstream[len(nums):]) if m else None
    if pre:
        suffix = f"_{pre.group(1)}{pre.group(2)}"
    rev = re.search(r"\d+", revision)
    return f"{nums}{suffix}-r{int(rev.group(0)) if rev else 0}"


def _version_key(v: str) -> tuple:
    """Order key for versions produced by `apk_version` (and plain dotted numbers)."""
    m = re.match(r"^(\d+(?:\.\d+)*)(?:_(alpha|beta|pre|rc)(\d*))?(?:-r(\d+))?", v)
    if not m:
        return ((0,), 0, 0, 0)
    nums = tuple(int(x) for x in m.group(1).split("."))
    pre_rank = {"alpha": -4, "beta": -3, "pre": -2, "rc": -1}.get(m.group(2) or "", 0)
    return (nums, pre_rank, int(m.group(3) or 0), int(m.group(4) or 0))


def _satisfies(have: str, op: str, want: str) -> bool:
    a, b = _version_key(have), _version_key(want)
    if op == "=":
        # A Debian `=` pins the exact version; after mapping compare numbers and revision.
        return a == b
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


# ----------------------------------------------------------------------------- ELF


def elf_soname(data: bytes) -> str | None:
    """DT_SONAME of an ELF shared object, read from its dynamic section; None otherwise."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return None
    cls, order = data[4], data[5]
    if cls not in (1, 2) or order not in (1, 2):
        return None
    e = "<" if order == 1 else ">"
    is64 = cls == 2
    try:
        if is64:
            e_type, = struct.unpack_from(e + "H", data, 16)
            shoff, = struct.unpack_from(e + "Q", data, 40)
            shentsize, shnum = struct.unpack_from(e + "HH", data, 58)
        else:
            e_type, = struct.unpack_from(e + "H", data, 16)
            shoff, = struct.unpack_from(e + "I", data, 32)
            shentsize, shnum = struct.unpack_from(e + "HH", data, 46)
        if e_type != 3 or not shoff or not shnum:  # ET_DYN with section headers
            return None
        sections = []
        for i in range(shnum):
            off = shoff + i * shentsize
            if is64:
                _, sh_type, _, _, sh_offset, sh_size, sh_link = struct.unpack_from(
                    e + "IIQQQQI", data, off)
            else:
                _, sh_type, _, _, sh_offset, sh_size, sh_link = struct.unpack_from(
                    e + "IIIIIII", data, off)
            sections.append((sh_type, sh_offset, sh_size, sh_link))
        for sh_type, sh_offset, sh_size, sh_link in sections:
            if sh_type != 6:  # SHT_DYNAMIC
                continue
            str_off = sections[sh_link][1]
            fmt, step = (e + "qQ", 16) if is64 else (e + "iI", 8)
            for pos in range(sh_offset, sh_offset + sh_size, step):
                tag, val = struct.unpack_from(fmt, data, pos)
                if tag == 0:
                    break
                if tag == 14:  # DT_SONAME
                    start = str_off + val
                    end = data.index(b"\0", start)
                    return data[start:end].decode("utf-8", "replace")
    except (struct.error, IndexError, ValueError):
        return None
    return None


# ----------------------------------------------------------------------------- .deb reading


def read_ar(data: bytes, source: str) -> dict[str, bytes]:
    """Members of an `ar` archive (a `.deb`)."""
    if not data.startswith(b"!<arch>\n"):
        raise CorpusError(f"{source}: not an ar archive (.deb)")
    pos, out = 8, {}
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        if header[58:60] != b"`\n":
            raise CorpusError(f"{source}: corrupt ar member header at byte {pos}")
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        out[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
    return out


def _decompress(name: str, blob: bytes, source: str) -> bytes:
    if name.endswith(".xz"):
        return lzma.decompress(blob)
    if name.endswith(".gz"):
        return zlib.decompress(blob, 31)
    if name.endswith(".zst"):
        if shutil.which("zstd") is None:
            raise CorpusError(f"{source}: {name} needs the zstd command")
        return subprocess.run(["zstd", "-dc"], input=blob, capture_output=True,
                              check=True).stdout
    if name.endswith(".tar"):
        return blob
    raise CorpusError(f"{source}: unsupported compression of {name}")


def _member(members: dict[str, bytes], prefix: str, source: str) -> tuple[str, bytes]:
    for name, blob in members.items():
        if name.startswith(prefix):
            return name, _decompress(name, blob, source)
    raise CorpusError(f"{source}: no {prefix}* member")


def parse_control(text: str) -> dict[str, str]:
    """RFC 822-style `control` fields (continuation lines joined with newlines)."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line.startswith((" ", "\t")) and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return fields


def usrmerge_path(path: str) -> str:
    """`bin/x` → `usr/bin/x` (and sbin, lib, lib64 ...); other paths unchanged."""
    top, sep, rest = path.partition("/")
    if top in USRMERGE:
        return USRMERGE[top] + (sep + rest if rest else "")
    return path


@dataclass
class DebContent:
    """What conversion needs from one `.deb`, kept in the cache as JSON (without data)."""

    control: dict[str, str]
    paths: list[str]  # non-directory entries after usrmerge mapping
    sonames: list[str]
    commands: list[str]
    dropped: list[str] = field(default_factory=list)  # special files, duplicates


def _norm(name: str) -> str:
    name = name.removeprefix("./").rstrip("/")
    return "" if name == "." else name


class _Owner(TypedDict):
    """The DataEntry fields every entry of a .deb's data tar takes from its tar header."""

    uid: int
    gid: int
    mtime: int
    uname: str
    gname: str


def deb_entries(deb: bytes, source: str) -> tuple[DebContent, list[DataEntry]]:
    """Parse a `.deb` into control fields and APK data entries (usrmerge applied)."""
    members = read_ar(deb, source)
    _, control_tar = _member(members, "control.tar", source)
    with tarfile.open(fileobj=io.BytesIO(control_tar)) as tf:
        f = next((tf.extractfile(m) for m in tf if _norm(m.name) == "control"), None)
        if f is None:
            raise CorpusError(f"{source}: control.tar has no control file")
        control = parse_control(f.read().decode("utf-8", "replace"))
    _, data_tar = _member(members, "data.tar", source)
    entries: list[DataEntry] = []
    seen: set[str] = set()
    content = DebContent(control, [], [], [])
    with tarfile.open(fileobj=io.BytesIO(data_tar)) as tf:
        for m in tf:
            orig = _norm(m.name)
            if not orig:
                continue
            path = usrmerge_path(orig)
            if path in seen:
                if not m.isdir():
                    content.dropped.append(f"duplicate {orig}")
                continue
            # Parents that only existed under the merged name (e.g. usr/lib when the package
            # ships lib/...) are added before the first child.
            parents = path.split("/")[:-1]
            for i in range(1, len(parents) + 1):
                d = "/".join(parents[:i])
                if d not in seen:
                    seen.add(d)
                    entries.append(DataEntry(d, "dir", 0o755, mtime=int(m.mtime)))
            common: _Owner = {"uid": m.uid, "gid": m.gid, "mtime": int(m.mtime),
                              "uname": m.uname or "root", "gname": m.gname or "root"}
            if m.isdir():
                entries.append(DataEntry(path, "dir", m.mode, **common))
            elif m.issym():
                target = m.linkname
                if path != orig and not target.startswith("/"):
                    # Re-anchor a relative target from the old location to the new one.
                    absolute = posixpath.normpath(posixpath.join("/", posixpath.dirname(orig),
                                                                 target))
                    merged = "/" + usrmerge_path(absolute.lstrip("/"))
                    target = posixpath.relpath(merged, "/" + posixpath.dirname(path))
                entries.append(DataEntry(path, "symlink", 0o777, linkname=target, **common))
            elif m.islnk():
                entries.append(DataEntry(path, "hardlink", m.mode,
                                         linkname=usrmerge_path(_norm(m.linkname)), **common))
            elif m.isreg():
                f = tf.extractfile(m)
                body = f.read() if f else b""
                entries.append(DataEntry(path, "file", m.mode, data=body, **common))
                if body[:4] == b"\x7fELF" and ".so" in path.rsplit("/", 1)[-1]:
                    soname = elf_soname(body)
                    if soname:
                        content.sonames.append(soname)
            else:
                content.dropped.append(f"special file {orig}")
                continue
            seen.add(path)
            if not m.isdir():
                content.paths.append(path)
                if path.startswith(BIN_DIRS) and path.count("/") == 2 and (m.issym() or
                                                                           m.mode & 0o111):
                    content.commands.append(path.rsplit("/", 1)[1])
    return content, entries


# ----------------------------------------------------------------------------- apt


def _apt_depends(names: list[str], recurse: bool = False,
                 ) -> dict[str, list[list[tuple[str, list[str]]]]]:
    """For each real package among `names` (and, with `recurse`, every package reachable
    from them): its dependency groups, each a list of (option name, providers) with virtual
    names in <>."""
    cmd = ["apt-cache", "depends", *(["--recurse"] if recurse else []), "--no-recommends",
           "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
           *names]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 and not proc.stdout:
        if "No packages found" in proc.stderr:
            raise CorpusError(f"no such Debian package: {', '.join(names)}")
        raise CorpusError(f"apt-cache depends failed: {proc.stderr.strip()[:300]}")
    out: dict[str, list[list[tuple[str, list[str]]]]] = {}
    current: list[list[tuple[str, list[str]]]] | None = None
    group: list[tuple[str, list[str]]] = []
    for line in proc.stdout.splitlines():
        if not line.startswith(" "):
            current = None if line.startswith("<") else out.setdefault(line.strip(), [])
            group = []
            continue
        if current is None:
            continue
        m = re.match(r"^ ([ |])(PreDepends|Depends): (.*)$", line)
        if m:
            group.append((m.group(3).strip(), []))
            if m.group(1) == " ":
                current.append(group)
                group = []
        elif line.startswith("    ") and current:
            # Provider of the last option (it sits in the last closed group or the open one).
            target = group if group else current[-1]
            target[-1][1].append(line.strip())
    return out


def _choose(group: list[tuple[str, list[str]]]) -> str | None:
    for name, _ in group:
        if not name.startswith("<"):
            return name.split(":")[0]
    for name, providers in group:
        if providers:
            return providers[0].split(":")[0]
        base = name.strip("<>")
        if base.endswith(":any"):
            return base[: -len(":any")]
    return None


def resolve_closure(roots: list[str]) -> list[str]:
    """Names of the real packages needed by `roots` (sorted).

    One `apt-cache depends --recurse` lists every package reachable through any alternative
    (each apt-cache call costs ~0.7 s loading the cache, so one call, not one per level); the
    closure through first alternatives is then walked here. A chosen package the listing
    lacks is asked for directly."""
    roots = sorted(set(roots))
    known = _apt_depends(roots, recurse=True)
    real: set[str] = set()
    done: set[str] = set()
    frontier = roots
    while frontier:
        missing = [n for n in frontier if n not in known]
        if missing:
            known.update(_apt_depends(missing))
        unknown = sorted(set(roots) & set(frontier) - set(known))
        if unknown:
            raise CorpusError(f"no such Debian package: {', '.join(unknown)}")
        done.update(frontier)
        new: set[str] = set()
        for name in frontier:
            if name not in known:
                continue  # a virtual name (its provider is chosen by _choose)
            real.add(name)
            for g in known[name]:
                choice = _choose(g)
                if choice and choice not in done:
                    new.add(choice)
        frontier = sorted(new)
    return sorted(real)


APT_LISTS = Path("/var/lib/apt/lists")
APT_ETC = Path("/etc/apt")


@dataclass(frozen=True)
class DebFile:
    """One `.deb` as apt names it: the file name `apt-get download` writes, its size and the
    SHA-256 from the Packages index."""

    name: str
    filename: str
    size: int
    sha256: str


def _apt_stamp() -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of the apt package lists and sources: what the closure and the
    chosen `.deb` versions depend on. `apt-get update` changes it."""
    stamp = []
    candidates = [*(APT_LISTS.glob("*") if APT_LISTS.is_dir() else []),
                  APT_ETC / "sources.list", *APT_ETC.glob("sources.list.d/*"),
                  *APT_ETC.glob("preferences.d/*")]
    for path in sorted(candidates):
        try:
            st = path.stat()
        except OSError:
            continue
        if path.is_file() and path.name != "lock":
            stamp.append((str(path), st.st_size, st.st_mtime_ns))
    return stamp


def apt_print_uris(names: list[str]) -> dict[str, DebFile]:
    """The exact `.deb` apt would download for each of `names` (one `apt-get` call)."""
    proc = subprocess.run(["apt-get", "download", "--print-uris", *names],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise CorpusError(f"apt-get download --print-uris failed: {proc.stderr.strip()[-400:]}")
    out: dict[str, DebFile] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^'[^']+' (\S+) (\d+) SHA256:([0-9a-f]{64})$", line.strip())
        if m:
            filename = m.group(1)
            name = filename.split("_", 1)[0]
            out[name] = DebFile(name, filename, int(m.group(2)), m.group(3))
    lost = sorted(set(names) - set(out))
    if lost:
        raise CorpusError(f"apt-get download --print-uris did not list: {', '.join(lost)}")
    return out


def resolve_debs(roots: list[str], cache_dir: Path) -> list[DebFile]:
    """The closure of `roots` as exact `.deb` files, cached in `<cache>/closure/` under a key
    of the roots and the apt lists' stamp (so only `apt-get update` invalidates it)."""
    key_doc = {"roots": sorted(set(roots)), "apt": _apt_stamp(), "v": CONVERTER_VERSION}
    key = hashlib.sha256(json.dumps(key_doc).encode()).hexdigest()[:24]
    path = cache_dir / "closure" / f"{key}.json"
    try:
        doc = json.loads(path.read_text())
        return [DebFile(**d) for d in doc["debs"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    names = resolve_closure(roots)
    files = apt_print_uris(names)
    debs = [files[n] for n in names]
    _write_atomic(path, json.dumps({"roots": key_doc["roots"],
                                    "debs": [d.__dict__ for d in debs]}, indent=0).encode())
    return debs


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def download(debs: list[DebFile], deb_dir: Path) -> dict[str, Path]:
    """`apt-get download` every `.deb` not already in `deb_dir` (with its expected size);
    name → path. Downloads land in a private temp dir first, so a concurrent run never sees
    a partial file."""
    deb_dir.mkdir(parents=True, exist_ok=True)

    def present(d: DebFile) -> bool:
        try:
            return (deb_dir / d.filename).stat().st_size == d.size
        except OSError:
            return False

    missing = [d for d in debs if not present(d)]
    if missing:
        tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=deb_dir))
        try:
            proc = subprocess.run(["apt-get", "download", "-q", *(d.name for d in missing)],
                                  cwd=tmp, capture_output=True, text=True)
            if proc.returncode != 0:
                raise CorpusError(f"apt-get download failed: {proc.stderr.strip()[-400:]}")
            for d in missing:
                got = tmp / d.filename
                if not got.is_file():
                    raise CorpusError(f"apt-get download did not produce {d.filename}")
                os.replace(got, deb_dir / d.filename)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {d.name: deb_dir / d.filename for d in debs}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class DebHashes:
    """SHA-256 of `.deb` files, computed once: `<deb dir>/sha256.json` maps a file name to
    (size, mtime_ns, sha256), and a file whose size and mtime still match is not re-read."""

    def __init__(self, deb_dir: Path) -> None:
        self.path = deb_dir / "sha256.json"
        try:
            self.known: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.changed = False
        self.hashed = 0  # files actually read (for tests and progress)

    def digest(self, path: Path, expected: str | None = None) -> str:
        """The file's SHA-256; a mismatch with `expected` (apt's) is an error naming it."""
        st = path.stat()
        entry = self.known.get(path.name)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            digest = str(entry[2])
        else:
            digest = _file_sha256(path)
            self.hashed += 1
            self.known[path.name] = [st.st_size, st.st_mtime_ns, digest]
            self.changed = True
        if expected and digest != expected:
            raise CorpusError(f"{path}: SHA-256 {digest} does not match the Packages index "
                              f"({expected}); delete the file to download it again")
        return digest

    def save(self) -> None:
        if self.changed:
            _write_atomic(self.path, json.dumps(self.known, sort_keys=True).encode())
            self.changed = False


# ----------------------------------------------------------------------------- conversion


def _parse_relations(value: str) -> list[list[tuple[str, str, str]]]:
    """`a (>= 1) | b, c` → [[(a, '>=', '1'), (b, '', '')], [(c, '', '')]]."""
    groups = []
    for group in filter(None, (g.strip() for g in value.split(","))):
        options = []
        for alt in group.split("|"):
            m = re.match(r"^\s*([^\s(\[:]+)(?::\S+)?\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?", alt)
            if m:
                options.append((m.group(1), m.group(2) or "", m.group(3) or ""))
        if options:
            groups.append(options)
    return groups


_OPS = {">>": ">", "<<": "<", ">=": ">=", "<=": "<=", "=": "=", ">": ">=", "<": "<="}


def _pkginfo(content: DebContent, available: dict[str, str], provided: dict[str, str],
             replaces: list[str], stats: dict[str, int]) -> dict[str, list[str]]:
    c = content.control
    name = c["Package"]
    version = apk_version(c["Version"])
    depends = [BASELAYOUT]
    for field_name in ("Pre-Depends", "Depends"):
        for group in _parse_relations(c.get(field_name, "")):
            chosen = next(((n, op, v) for n, op, v in group
                           if n in available or n in provided), None)
            if chosen is None:
                stats["dropped_dependencies"] += 1
                continue
            dep, op, ver = chosen
            if dep == name:
                continue
            text = dep
            if op and dep in available:
                mapped_op, mapped = _OPS[op], apk_version(ver)
                if _satisfies(available[dep], mapped_op, mapped):
                    text = f"{dep}{mapped_op}{mapped}"
                else:
                    stats["dropped_constraints"] += 1
            if text not in depends:
                depends.append(text)
    provides = []
    for group in _parse_relations(c.get("Provides", "")):
        n, op, v = group[0]
        provides.append(f"{n}={apk_version(v)}" if op == "=" else n)
    for soname in sorted(set(content.sonames)):
        sover = soname.split(".so.", 1)[1] if ".so." in soname else "0"
        if not re.fullmatch(r"\d+(\.\d+)*", sover):
            sover = "0"
        provides.append(f"so:{soname}={sover}")
    provides += [f"cmd:{cmd}={version}" for cmd in sorted(set(content.commands))]
    fields = {
        "pkgname": [name],
        "pkgver": [version],
        "pkgdesc": [c.get("Description", "").split("\n")[0]],
        "url": [c.get("Homepage", "")],
        "builddate": ["0"],
        "arch": [ARCH],
        "origin": [c.get("Source", name).split()[0]],
        "maintainer": [c.get("Maintainer", "")],
        "license": ["Debian"],
        "depend": depends,
        "provides": provides,
    }
    if replaces:
        fields["replaces"] = replaces
    return fields


def _baselayout() -> list[DataEntry]:
    dirs = ["etc", "home", "root", "run", "tmp", "usr", "usr/bin", "usr/lib", "usr/lib64",
            "usr/sbin", "usr/share", "var", "var/lib", "var/log", "var/tmp"]
    entries = [DataEntry(d, "dir", 0o1777 if d.endswith("tmp") else
                         (0o700 if d == "root" else 0o755)) for d in dirs]
    entries += [DataEntry(src, "symlink", 0o777, linkname=dst) for src, dst in
                sorted(USRMERGE.items()) if src in ("bin", "lib", "lib64", "sbin")]
    entries.sort(key=lambda e: e.path.split("/"))
    return entries


@dataclass
class _Converted:
    """A `.deb`'s field-independent conversion, cached under `<cache>/data/`: its content
    summary and the gzip'ed APK data section (PAX SHA-1 records, usrmerge applied)."""

    content: DebContent
    data_path: Path
    data_size: int
    data_sha256: str
    installed_size: int


def _data_paths(digest: str, data_dir: Path) -> tuple[Path, Path]:
    stem = data_dir / f"{digest}-v{CONVERTER_VERSION}"
    return stem.with_suffix(".json"), stem.with_suffix(".data.gz")


def _load_converted(digest: str, data_dir: Path) -> _Converted | None:
    """The cached conversion of the `.deb` with SHA-256 `digest`, if complete."""
    meta, data_path = _data_paths(digest, data_dir)
    try:
        doc = json.loads(meta.read_text())
        if data_path.stat().st_size == doc["data_size"]:
            return _Converted(DebContent(**doc["content"]), data_path, doc["data_size"],
                              doc["data_sha256"], doc["installed_size"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _convert_data(deb: Path, digest: str, data_dir: Path) -> _Converted:
    """Parse `deb` once and write its data section and content summary into the cache."""
    meta, data_path = _data_paths(digest, data_dir)
    content, entries = deb_entries(deb.read_bytes(), deb.name)
    data, installed = write_data_tar(entries, COMPRESS_LEVEL, COMPRESS_ENGINE)
    del entries
    conv = _Converted(content, data_path, len(data), hashlib.sha256(data).hexdigest(), installed)
    _write_atomic(data_path, data)
    # The description goes last: it is what marks the entry complete.
    _write_atomic(meta, json.dumps({"content": content.__dict__, "data_size": conv.data_size,
                                    "data_sha256": conv.data_sha256,
                                    "installed_size": installed}).encode())
    return conv


def _package_head(conv: _Converted, fields: dict[str, list[str]], key: rsa.RSAPrivateKey,
                  key_name: str, head_dir: Path, digest: str) -> tuple[bytes, Package]:
    """Signature + control of the package (`fields` around the cached data section) and its
    index record; both cached under `<cache>/heads/`, keyed by the `.deb` and the fields, so a
    second run neither signs nor re-reads the package to index it."""
    fields = {k: list(v) for k, v in fields.items()}
    fields["size"] = [str(conv.installed_size)]
    fields["datahash"] = [conv.data_sha256]
    fkey = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    stem = head_dir / f"{digest}-{fkey}-v{CONVERTER_VERSION}"
    head_path, record_path = stem.with_suffix(".head"), stem.with_suffix(".json")
    try:
        record = Package(**json.loads(record_path.read_text()))
        head = head_path.read_bytes()
        if record.size == len(head) + conv.data_size:
            return head, record
    except (OSError, ValueError, TypeError):
        pass
    control = build_control(fields, {}, int(fields["builddate"][0]), COMPRESS_LEVEL,
                            COMPRESS_ENGINE)
    # Signed with the key loaded once: loading a PEM key costs ~40 ms (more than signing).
    signature = key.sign(control, padding.PKCS1v15(), hashes.SHA256())
    head = signature_member(key_name, signature, "sha256") + control
    # The record comes from parsing the package head, as an indexer would (the data section
    # is not inflated by that parse, so its first bytes stand in for all of it).
    with conv.data_path.open("rb") as f:
        data_start = f.read(64)
    apk = read_apk(head + data_start, fields["pkgname"][0])
    record = index_record_from_apk(apk, len(head) + conv.data_size)
    _write_atomic(head_path, head)
    _write_atomic(record_path, json.dumps(dataclasses.asdict(record)).encode())
    return head, record


def _write_package(path: Path, head: bytes, data_path: Path) -> None:
    """`head` + the cached data section, written atomically to `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as out, data_path.open("rb") as src:
        out.write(head)
        out.flush()
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            sent = os.sendfile(out.fileno(), src.fileno(), offset, size - offset)
            if sent == 0:
                raise CorpusError(f"{data_path}: shorter than expected while copying")
            offset += sent
    os.replace(tmp, path)


def _signing_key(cache_dir: Path) -> bytes:
    """The corpus key (derived from a fixed seed; deriving takes ~0.4 s, so it is cached)."""
    path = cache_dir / "signing-key-debian.pem"
    try:
        return path.read_bytes()
    except OSError:
        pem = derive_rsa_key("debian")
        _write_atomic(path, pem)
        return pem


def mirror_reachable(timeout: float = 4.0) -> bool:
    """Whether `apt-get download` can reach the Debian mirror (probes one package URL)."""
    if shutil.which("apt-get") is None:
        return False
    try:
        proc = subprocess.run(["apt-get", "download", "--print-uris", "bash"],
                              capture_output=True, text=True, timeout=20)
        url = proc.stdout.split("'")[1]
        import requests

        return requests.head(url, timeout=timeout).status_code < 400
    except Exception:
        return False


def convert_corpus(out: Path, preset: str = "small", packages: list[str] | None = None,
                   cache_dir: Path = DEFAULT_CACHE, repo_url: str | None = None,
                   progress: Callable[[str], None] | None = None) -> CorpusInfo:
    """Download the closure of `packages` (or the preset's) and write a signed APK corpus.

    Cache (`cache_dir`): `closure/` (closure per roots + apt lists stamp), `debs/` (the
    `.deb`s and their SHA-256 by name/size/mtime), `data/` (per `.deb`: content summary and
    APK data section), `heads/` (per `.deb` + fields: signature+control and index record)."""
    if packages is None and preset not in PRESETS:
        raise CorpusError(f"unknown Debian preset {preset!r} (choose {', '.join(PRESETS)})")
    roots = list(packages or PRESETS[preset])
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    out = out.resolve()
    cache_dir = cache_dir.resolve()
    timings: dict[str, float] = {}
    debs = resolve_debs(roots, cache_dir)
    names = [d.name for d in debs]
    say(f"closure of {' '.join(roots)}: {len(names)} packages")
    timings["resolve"] = time.perf_counter() - t0
    paths = download(debs, cache_dir / "debs")
    timings["download"] = time.perf_counter() - t0 - sum(timings.values())

    key_name = "apkperf-debian.rsa.pub"
    private_pem = _signing_key(cache_dir)
    pub = write_keys(out, private_pem, key_name)
    writer = RepoWriter(out, private_pem, key_name)
    info = CorpusInfo(kind="debian", preset=preset if packages is None else "custom", seed=None,
                      generator_version=CONVERTER_VERSION, arch=ARCH, key_name=key_name,
                      top_level=[BASELAYOUT, *roots])
    stats = {"dropped_dependencies": 0, "dropped_constraints": 0, "dropped_entries": 0}

    # Pass 1: each .deb converted once into its data section + content summary (cached).
    hashes = DebHashes(cache_dir / "debs")
    data_dir = cache_dir / "data"
    converted: dict[str, _Converted] = {}
    digests: dict[str, str] = {}
    try:
        for d in debs:
            digests[d.name] = hashes.digest(paths[d.name], d.sha256)
    finally:
        hashes.save()
    todo = []
    for d in debs:
        cached = _load_converted(digests[d.name], data_dir)
        if cached is None:
            todo.append(d.name)
        else:
            converted[d.name] = cached
    if todo:
        say(f"converting {len(todo)} .deb files")
        # Packages convert independently (xz inflate, tar parse, SHA-1s, gzip): one process
        # per CPU, largest first so the long ones do not come last.
        todo.sort(key=lambda n: -paths[n].stat().st_size)
        workers = min(len(todo), os.cpu_count() or 1)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                futures = {n: pool.submit(_convert_data, paths[n], digests[n], data_dir)
                           for n in todo}
                converted.update({n: f.result() for n, f in futures.items()})
        else:
            converted.update({n: _convert_data(paths[n], digests[n], data_dir) for n in todo})
    timings["convert"] = time.perf_counter() - t0 - sum(timings.values())
    contents = {n: c.content for n, c in converted.items()}
    available = {n: apk_version(c.control["Version"]) for n, c in contents.items()}
    provided: dict[str, str] = {}
    for n, c in contents.items():
        for group in _parse_relations(c.control.get("Provides", "")):
            provided.setdefault(group[0][0], n)
    owners: dict[str, str] = {}

    # The baselayout every converted package depends on.
    base_fields = {"pkgname": [BASELAYOUT], "pkgver": ["12-r0"], "arch": [ARCH],
                   "pkgdesc": ["merged-/usr layout for converted Debian packages"],
                   "url": [""], "builddate": ["0"], "license": ["MIT"],
                   "origin": [BASELAYOUT]}
    base_apk = build_apk(base_fields, _baselayout(), private_pem, key_name,
                         level=COMPRESS_LEVEL, engine=COMPRESS_ENGINE)
    rec = writer.add(base_apk, BASELAYOUT)
    info.packages.append(PackageStats(BASELAYOUT, rec.version, 4, 0, len(base_apk)))

    # Pass 2: fields (which depend on the whole set) around each cached data section.
    head_dir = cache_dir / "heads"
    signing_key = load_private_key(private_pem, "corpus signing key")
    for name in names:
        content = contents[name]
        shared = {p for p in content.paths if p in owners and owners[p] != name}
        replaces = sorted({owners[p] for p in shared})
        for p in content.paths:
            owners.setdefault(p, name)
        # Versioned provides are exclusive in apk: a command another package already
        # provides (same path, replaced) is not provided again.
        shared_cmds = {p.rsplit("/", 1)[1] for p in shared if p.startswith(BIN_DIRS)}
        if shared_cmds:
            content = DebContent(content.control, content.paths, content.sonames,
                                 [c for c in content.commands if c not in shared_cmds],
                                 content.dropped)
        fields = _pkginfo(content, available, provided, replaces, stats)
        stats["dropped_entries"] += len(content.dropped)
        conv = converted[name]
        head, record = _package_head(conv, fields, signing_key, key_name, head_dir,
                                     digests[name])
        _write_package(writer.arch_dir / record.filename, head, conv.data_path)
        writer.records.append(record)
        info.packages.append(PackageStats(name, record.version, len(content.paths),
                                          record.installed_size, record.size))
        say(f"{name}-{record.version}: {len(content.paths)} files, "
            f"{record.installed_size / 1e6:.1f} MB -> {record.size / 1e6:.1f} MB")
    writer.finish(f"Debian packages converted by apkperf ({' '.join(roots)})")
    timings["write"] = time.perf_counter() - t0 - sum(timings.values())
    write_config(out / "apko.yaml", repo_url or str(out), pub, info.top_level,
                 extra={"entrypoint": {"command": "/bin/bash"}})
    info.seconds = round(time.perf_counter() - t0, 2)
    info.extra = {**stats, "debs_hashed": hashes.hashed,
                  "seconds_by_step": {k: round(v, 2) for k, v in timings.items()}}
    (out / "corpus.json").write_text(info.to_json())
    return info
