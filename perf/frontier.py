"""The compressor frontier: output bytes against throughput for every compressor setting we
could put behind the `fast` profile, measured on one workload's real layer tar.

The input is the workload's uncompressed sorted layer tar, exactly: the workload is built once
with `apkimage build --impl fast`, the layer blob is inflated and its SHA-256 checked against
the image's diffID. Every candidate then compresses the same in-memory bytes (fed as the fast
layer writer feeds its sink: 1 MiB pieces), `repeat` rounds, each round running every
candidate once (so slow drift of a shared machine is spread over all of them); the median
of the rounds is reported. In round 0 (outside the timing) every output is decompressed by an
independent decoder (stdlib zlib, or zstandard) and must give the input back; a gzip
candidate that claims one member must be exactly one member.

Per candidate: compressed bytes, their ratio to zlib level 6's (`gzip -6`, the reference
compressor), single-core MB/s (MB = 10^6 bytes of uncompressed input, wall time with one
compressing thread), CPU seconds per MB (user + sys of the process, or of the child for a
command line), and for the block/parallel modes the wall MB/s on 2 threads. A candidate whose
library or command is not there is kept as a row with `skipped` saying why: never measured
with something else.

Candidates (`CANDIDATES`, names as `apkimage build --impl ...,compress=NAME` spells the ones
the builder has):
- `zlib:N` (1-9), `isal:N` (0-3): the builder's serial `GzipSink`;
- `isal-mt:N` (0-3): the builder's block mode (`GzipSink`, 1 MiB blocks, 32 KiB dictionary);
- `zlib-ng:N`, `zlib-ng-mt:N`: PyPI `zlib-ng` in the same serial and block formats (the
  builder's algorithm, `gzip_serial`/`gzip_blocks` here, checked byte-equal to `GzipSink`);
- `libdeflate:N`: PyPI `deflate` (libdeflate), which compresses a whole buffer at once only;
  `libdeflate-mm:N`: 1 MiB blocks each its own gzip member (libdeflate cannot end a block
  without ending the stream, nor take a dictionary) — valid gzip, but NOT the one member the
  builder writes, so never recommended;
- `gzip -N`, `pigz -N` (1, 6, 9): Debian's command lines on a tmpfs copy of the tar;
- `zstd:N`: the builder's `ZstdSink`, for comparison (another media type).

Results are stored as `.perf/frontier/<machine-id>/<commit>[-dirty]/<stamp>-<workload>.json`
with the machine fingerprint; `render_chart` and `section_html` draw the latest ones into the
report.
"""

from __future__ import annotations

import fnmatch
import gzip as _gzip_mod
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from importlib import metadata
from pathlib import Path
from typing import Any

from builder.deflate.gzipstream import GZIP_HEADER
from builder.errors import ApkImageError
from builder.oci.layout import read_image_index
from perf import stats

SCHEMA_VERSION = 1
MB = 1e6  # throughput unit: 10^6 bytes of uncompressed input
UNIT = 1 << 20  # the piece size the fast layer writer hands its sink; the block size
WINDOW = 1 << 15
REFERENCE = "zlib:6"  # = gzip -6 of the same tar
BASELINE = "isal-mt:1"  # the `fast` profile's compressor today
TARGET_RATIO = 1.05
THREADS = 2  # the wall-time measurement of parallel modes


class FrontierError(ApkImageError):
    """The layer tar could not be made, or a measurement could not be taken."""


# ------------------------------------------------------------------------------------- input


@dataclass
class Input:
    """The bytes every candidate compresses, kept in memory: whole, and cut into 1 MiB pieces
    (what a streaming compressor is fed); `path` is a tmpfs copy made for the command lines."""

    data: bytes
    workdir: Path
    chunks: list[bytes] = field(init=False)
    sha256: str = field(init=False)
    _path: Path | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.chunks = [self.data[i:i + UNIT] for i in range(0, len(self.data), UNIT)]
        self.sha256 = hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = self.workdir / "layer.tar"
            self._path.write_bytes(self.data)
        return self._path


def scratch_dir() -> Path:
    """A temporary directory in memory (/dev/shm) where there is one, else the default."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="apkperf-frontier-", dir=base))


def layer_tar_from_layout(layout: Path) -> tuple[bytes, str]:
    """The uncompressed layer of the (first) image in an OCI layout, checked against its
    diffID; (tar bytes, diffID)."""
    def blob(digest: str) -> bytes:
        algo, _, hexd = digest.partition(":")
        return (layout / "blobs" / algo / hexd).read_bytes()

    try:
        index = json.loads(read_image_index(layout))
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        layers, diff_ids = manifest["layers"], config["rootfs"]["diff_ids"]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise FrontierError(f"{layout}: not a readable OCI layout: {exc}") from None
    if len(layers) != 1 or len(diff_ids) != 1:
        raise FrontierError(f"{layout}: expected one layer, found {len(layers)}")
    raw = blob(layers[0]["digest"])
    media = layers[0].get("mediaType", "")
    if media.endswith("+zstd"):
        import zstandard

        tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
    else:
        tar = _gzip_mod.decompress(raw)
    got = "sha256:" + hashlib.sha256(tar).hexdigest()
    if got != diff_ids[0]:
        raise FrontierError(f"{layout}: inflated layer is {got}, diffID says {diff_ids[0]}")
    return tar, got


def build_layer_tar(config: Path, work: Path, impl: str = "fast",
                    python: str = sys.executable) -> tuple[bytes, dict]:
    """Build `config` with this tree's apkimage (fresh process, private cache under `work`)
    and return its layer tar and how it was made."""
    out = work / "image"
    argv = [python, "-m", "builder.cli", "build", str(config), "frontier:latest", str(out),
            "--impl", impl, "--cache-dir", str(work / "cache")]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise FrontierError(f"building {config} failed (exit {proc.returncode}): {tail}")
    tar, diff_id = layer_tar_from_layout(out)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / "cache", ignore_errors=True)
    return tar, {"source": f"apkimage build --impl {impl}", "config": str(config),
                 "diff_id": diff_id, "build_s": round(seconds, 3)}


# ---------------------------------------------------------------------- gzip in the builder's
# formats over any zlib-compatible module (zlib-ng has no builder engine)


def _compressobj(lib: Any, level: int, dictionary: bytes = b"") -> Any:
    """A raw deflate compressor set up as builder.deflate.sink.GzipSink sets one up."""
    mem = 9 if lib is zlib else lib.DEF_MEM_LEVEL
    if dictionary:
        return lib.compressobj(level, lib.DEFLATED, -15, mem, lib.Z_DEFAULT_STRATEGY,
                               dictionary)
    return lib.compressobj(level, lib.DEFLATED, -15, mem)


def gzip_serial(lib: Any, level: int, chunks: Sequence[bytes]) -> bytes:
    """One gzip member, one continuous deflate stream fed in the given pieces (GzipSink's
    serial mode)."""
    c = _compressobj(lib, level)
    crc = size = 0
    out = [GZIP_HEADER]
    for piece in chunks:
        crc = lib.crc32(piece, crc)
        size += len(piece)
        out.append(c.compress(piece))
    out.append(c.flush())
    out.append(struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))
    return b"".join(out)


def gzip_blocks(lib: Any, level: int, blocks: Sequence[bytes], threads: int) -> bytes:
    """One gzip member from independently deflated blocks (GzipSink's block mode: each block
    primed with the previous one's last 32 KiB, ended by a sync flush; an empty final block),
    compressed on `threads` threads. `blocks` must be UNIT-sized but for the last."""
    def one(i: int) -> tuple[bytes, int]:
        c = _compressobj(lib, level, blocks[i - 1][-WINDOW:] if i else b"")
        return c.compress(blocks[i]) + c.flush(lib.Z_SYNC_FLUSH), lib.crc32(blocks[i])

    out = [GZIP_HEADER]
    crc = size = 0
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for (data, bcrc), block in zip(pool.map(one, range(len(blocks))), blocks, strict=True):
            crc = _crc_combine(lib, crc, bcrc, len(block))
            size += len(block)
            out.append(data)
    out.append(_compressobj(lib, level).flush())
    out.append(struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))
    return b"".join(out)


def _crc_combine(lib: Any, crc1: int, crc2: int, len2: int) -> int:
    combine = getattr(lib, "crc32_combine", None)
    if combine is None:
        from isal import isal_zlib

        combine = isal_zlib.crc32_combine
    return combine(crc1, crc2, len2)


def members_blocks(compress: Callable[[bytes], bytes | bytearray], blocks: Sequence[bytes],
                   threads: int) -> bytes:
    """Each block its own gzip member (a multi-member gzip file), on `threads` threads."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return b"".join(pool.map(compress, blocks))


# -------------------------------------------------------------------------- verification


def gunzip_check(blob: bytes | bytearray) -> tuple[str, int, int]:
    """Inflate every gzip member of `blob` with stdlib zlib: (SHA-256 hex of the output,
    output size, member count). Raises FrontierError on corrupt, truncated or trailing
    data."""
    view = memoryview(blob)
    h = hashlib.sha256()
    pos = size = members = 0
    try:
        while pos < len(view):
            if bytes(view[pos:pos + 2]) != b"\x1f\x8b":
                raise FrontierError(f"not a gzip member at byte {pos}")
            d = zlib.decompressobj(31)
            while not d.eof:
                if pos >= len(view):
                    raise FrontierError("truncated gzip member")
                piece = view[pos:pos + UNIT]
                out = d.decompress(piece)
                h.update(out)
                size += len(out)
                pos += len(piece) - (len(d.unused_data) if d.eof else 0)
            members += 1
    except zlib.error as exc:
        raise FrontierError(f"corrupt gzip data near byte {pos}: {exc}") from None
    return h.hexdigest(), size, members


def unzstd_check(blob: bytes | bytearray) -> tuple[str, int, int]:
    import zstandard

    h = hashlib.sha256()
    size = 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob),
                                                        read_across_frames=True) as r:
            while piece := r.read(UNIT):
                h.update(piece)
                size += len(piece)
    except zstandard.ZstdError as exc:
        raise FrontierError(f"corrupt zstd data: {exc}") from None
    return h.hexdigest(), size, 1


# ---------------------------------------------------------------------------- candidates


@dataclass
class Sample:
    out: bytes | bytearray | None  # the compressed bytes (kept only when asked for)
    size: int
    wall_s: float
    cpu_s: float


@dataclass(frozen=True)
class Candidate:
    name: str
    family: str  # zlib | isal | zlib-ng | libdeflate | gzip | pigz | zstd
    level: int
    mode: str  # serial | blocks | whole-buffer | members | cli
    parallel: bool  # also measured on THREADS threads
    builder: str | None  # the builder's compressor setting of the same bytes, if any
    single_member: bool = True  # one gzip member (what the builder writes); zstd: n/a
    fmt: str = "gzip"  # gzip | zstd
    needs: str = ""  # module or command whose absence skips it
    note: str = ""

    def missing(self) -> str | None:
        """Why this candidate cannot be measured here, or None."""
        if not self.needs:
            return None
        if self.mode == "cli":
            return None if shutil.which(self.needs) else f"{self.needs} not installed"
        try:
            __import__(self.needs)
        except ImportError:
            return f"Python module {self.needs} not installed"
        return None

    def run(self, inp: Input, threads: int, keep: bool) -> Sample:
        if self.mode == "cli":
            return self._run_cli(inp, threads, keep)
        c0, t0 = time.process_time(), time.perf_counter()
        out = self._compress(inp, threads)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if isinstance(out, Path):  # a builder sink's file: read back outside the timing
            size = out.stat().st_size
            data = out.read_bytes() if keep else None
            out.unlink()
            return Sample(data, size, wall, cpu)
        return Sample(out if keep else None, len(out), wall, cpu)

    # in-process compressors ------------------------------------------------------
    def _compress(self, inp: Input, threads: int) -> bytes | bytearray | Path:
        """The compressed bytes (libdeflate's are a bytearray), or a builder sink's file."""
        fam, lvl = self.family, self.level
        if self.fmt == "zstd":
            from builder.compress.zstd import ZstdSink

            return _through_sink(ZstdSink, inp, level=lvl)
        if fam in ("zlib", "isal"):
            from builder.deflate.sink import GzipSink

            block = UNIT if self.mode == "blocks" else 0
            return _through_sink(GzipSink, inp, engine=fam, level=lvl, threads=threads,
                                 block_size=block)
        if fam == "zlib-ng":
            from zlib_ng import zlib_ng

            if self.mode == "blocks":
                return gzip_blocks(zlib_ng, lvl, inp.chunks, threads)
            return gzip_serial(zlib_ng, lvl, inp.chunks)
        if fam == "libdeflate":
            import deflate

            if self.mode == "members":
                return members_blocks(lambda b: deflate.gzip_compress(b, lvl), inp.chunks,
                                      threads)
            return deflate.gzip_compress(inp.data, lvl)
        raise FrontierError(f"{self.name}: no in-process compressor for family {fam!r}")

    # command lines ---------------------------------------------------------------
    def _run_cli(self, inp: Input, threads: int, keep: bool) -> Sample:
        from perf.runner import measure

        argv = [self.needs, f"-{self.level}", "-n", "-c"]
        if self.family == "pigz":
            argv += ["-p", str(threads)]
        src = inp.path  # made before the clock starts
        out = inp.workdir / f"{self.family}-{self.level}.gz"
        res = measure([*argv, str(src)], stdout=out)
        if res.returncode != 0:
            raise FrontierError(f"{' '.join(argv)} exited {res.returncode}")
        data = out.read_bytes() if keep else None
        size = out.stat().st_size
        out.unlink()
        return Sample(data, size, res.wall_s, res.cpu_s)


def _through_sink(sink_cls: Any, inp: Input, **kw: Any) -> Path:
    """Feed the pieces to a builder sink writing a file in the (tmpfs) work directory, as the
    fast layer writer feeds it; the file."""
    path = inp.workdir / "sink.out"
    sink = sink_cls(path, **kw)
    with sink:
        for piece in inp.chunks:
            sink.write(piece)
        sink.close()
    return path


def _c(name: str, family: str, level: int, mode: str, *, parallel: bool = False,
       builder: str | None = None, **kw: Any) -> Candidate:
    return Candidate(name, family, level, mode, parallel, builder, **kw)


CANDIDATES: list[Candidate] = [
    *[_c(f"zlib:{n}", "zlib", n, "serial", builder=f"zlib:{n}") for n in range(1, 10)],
    *[_c(f"isal:{n}", "isal", n, "serial", builder=f"isal:{n}", needs="isal")
      for n in range(4)],
    *[_c(f"isal-mt:{n}", "isal", n, "blocks", parallel=True, builder=f"isal-mt:{n}",
         needs="isal") for n in range(4)],
    *[_c(f"zlib-ng:{n}", "zlib-ng", n, "serial", needs="zlib_ng") for n in range(1, 10)],
    *[_c(f"zlib-ng-mt:{n}", "zlib-ng", n, "blocks", parallel=True, needs="zlib_ng")
      for n in range(1, 7)],
    *[_c(f"libdeflate:{n}", "libdeflate", n, "whole-buffer", needs="deflate",
         note="whole buffer at once (no streaming API)") for n in range(1, 10)],
    *[_c(f"libdeflate-mm:{n}", "libdeflate", n, "members", parallel=True, needs="deflate",
         single_member=False, note="one gzip member per 1 MiB block (not the builder's "
         "single member)") for n in (1, 2, 3, 6)],
    *[_c(f"gzip -{n}", "gzip", n, "cli", needs="gzip") for n in (1, 6, 9)],
    *[_c(f"pigz -{n}", "pigz", n, "cli", parallel=True, needs="pigz",
         note="pigz's own 128 KiB blocks; bytes may differ with -p") for n in (1, 6, 9)],
    *[_c(f"zstd:{n}", "zstd", n, "serial", builder=f"zstd:{n}", fmt="zstd",
         needs="zstandard", note="tar+zstd media type") for n in (1, 3, 6, 9)],
]


def select(patterns: str | None, candidates: Sequence[Candidate] = CANDIDATES
           ) -> list[Candidate]:
    """Candidates matching any comma-separated fnmatch pattern (all when None); the
    reference and the baseline are always included (ratios and the target need them)."""
    if not patterns:
        return list(candidates)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    return [c for c in candidates
            if c.name in (REFERENCE, BASELINE) or any(fnmatch.fnmatch(c.name, p) for p in pats)]


# ---------------------------------------------------------------------------- measuring


def _verify(cand: Candidate, out: bytes | bytearray, inp: Input) -> str | None:
    """None when `out` decompresses to the input (and is one member if it claims to)."""
    try:
        digest, size, members = (unzstd_check if cand.fmt == "zstd" else gunzip_check)(out)
    except FrontierError as exc:
        return str(exc)
    if size != inp.size or digest != inp.sha256:
        return f"decompresses to {size} bytes (sha256 {digest[:12]}), not the input"
    if cand.fmt == "gzip" and cand.single_member and members != 1:
        return f"{members} gzip members, expected one"
    return None


def _summary(samples: list[Sample], size_in: int) -> dict:
    walls = [round(s.wall_s, 6) for s in samples]  # the rates are computed from these
    cpus = [round(s.cpu_s, 6) for s in samples]
    wall, cpu = stats.median(walls), stats.median(cpus)
    return {"wall_s": walls, "cpu_s": cpus,
            "mb_s": round(size_in / MB / wall, 2) if wall > 0 else None,
            "cpu_s_per_mb": round(cpu / (size_in / MB), 7) if size_in else None,
            "wall_mad_s": round(stats.mad(walls), 6)}


def measure_candidates(inp: Input, candidates: Sequence[Candidate], repeat: int = 3,
                       threads: int = THREADS,
                       progress: Callable[[str], None] | None = None) -> list[dict]:
    """Measure every candidate `repeat` rounds on `inp`; one result dict each (see the
    module docstring). Round 0 also checks each output."""
    if repeat < 1:
        raise FrontierError("repeat must be at least 1")
    rows: dict[str, dict] = {}
    one: dict[str, list[Sample]] = {}
    par: dict[str, list[Sample]] = {}
    for c in candidates:
        rows[c.name] = {"name": c.name, "family": c.family, "level": c.level, "mode": c.mode,
                        "format": c.fmt, "parallel": c.parallel, "builder": c.builder,
                        "single_member": c.single_member if c.fmt == "gzip" else None,
                        "note": c.note, "skipped": c.missing(), "error": None,
                        "threads_bytes": None}
        one[c.name], par[c.name] = [], []
    for rnd in range(repeat):
        for c in candidates:
            row = rows[c.name]
            if row["skipped"] or row["error"]:
                continue
            try:
                s = c.run(inp, 1, keep=rnd == 0)
                if rnd == 0:
                    assert s.out is not None
                    row["error"] = _verify(c, s.out, inp)
                    s.out = None
                    row["bytes"] = s.size
                elif s.size != row["bytes"]:
                    row["error"] = f"round {rnd}: {s.size} bytes, round 0 gave {row['bytes']}"
                one[c.name].append(s)
                if c.parallel and not row["error"]:
                    p = c.run(inp, threads, keep=rnd == 0)
                    if rnd == 0:
                        assert p.out is not None
                        err = _verify(c, p.out, inp)
                        row["threads_bytes"] = p.size
                        if err is None and p.size != row["bytes"] and c.mode != "cli":
                            # the builder's modes promise the same bytes on any thread count
                            err = f"{threads} threads gave {p.size} bytes, 1 thread {s.size}"
                        row["error"] = err
                        p.out = None
                    par[c.name].append(p)
            except (FrontierError, OSError, ValueError) as exc:
                row["error"] = str(exc)
            if progress:
                extra = f" / {par[c.name][-1].wall_s:.2f} s on {threads}" if (
                    par[c.name] and len(par[c.name]) == rnd + 1) else ""
                status = row["error"] or f"{s.wall_s:.2f} s{extra}"
                progress(f"round {rnd + 1}/{repeat} {c.name}: {status}")
    ref = rows.get(REFERENCE, {}).get("bytes")
    base_row = rows.get(BASELINE)
    out = []
    for c in candidates:
        row = rows[c.name]
        if row["skipped"] or row["error"]:
            row.update(bytes=row.get("bytes"), ratio=None, single=None, threads=None)
            out.append(row)
            continue
        row["ratio"] = round(row["bytes"] / ref, 5) if ref else None
        row["single"] = _summary(one[c.name], inp.size)
        row["threads"] = ({"n": threads, **_summary(par[c.name], inp.size)}
                          if par[c.name] else None)
        out.append(row)
    base_cpu = (base_row or {}).get("single", {}) or {}
    for row in out:
        cpu = (row.get("single") or {}).get("cpu_s_per_mb")
        row["cpu_vs_baseline"] = (round(cpu / base_cpu["cpu_s_per_mb"], 4)
                                  if cpu and base_cpu.get("cpu_s_per_mb") else None)
    return out


def _load() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - not Linux
        return (0.0, 0.0, 0.0)


def library_versions() -> dict[str, str | None]:
    def dist(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    out: dict[str, str | None] = {"zlib": zlib.ZLIB_RUNTIME_VERSION, "isal": dist("isal"),
                                  "zlib-ng": dist("zlib-ng"), "deflate": dist("deflate"),
                                  "zstandard": dist("zstandard")}
    try:
        from zlib_ng import zlib_ng

        # zlib-ng's stub says int; the value is the version string ("2.3.3")
        out["zlib-ng-lib"] = zlib_ng.ZLIBNG_RUNTIME_VERSION  # type: ignore[assignment]
    except ImportError:
        pass
    for tool in ("gzip", "pigz"):
        if shutil.which(tool):
            p = subprocess.run([tool, "--version"], capture_output=True, text=True)
            lines = (p.stdout or p.stderr).strip().splitlines()
            out[tool] = lines[0] if lines else None
        else:
            out[tool] = None
    return out


def run_frontier(data: bytes, *, workload: str, repeat: int = 3,
                 candidates: Sequence[Candidate] = CANDIDATES, threads: int = THREADS,
                 source: dict | None = None, workdir: Path | None = None,
                 progress: Callable[[str], None] | None = None,
                 commit: tuple[str, bool] | None = None) -> dict:
    """Measure `candidates` on `data`; the result document (what `save_results` stores)."""
    from perf.machine import machine_id, machine_info

    if commit is None:
        from perf.gitrefs import head_state

        try:
            commit = head_state(Path(__file__).resolve().parents[1])
        except ApkImageError:
            commit = ("0" * 40, True)
    own = workdir is None
    work = workdir or scratch_dir()
    try:
        inp = Input(data, work)
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        load0 = _load()
        t0 = time.perf_counter()
        rows = measure_candidates(inp, candidates, repeat, threads, progress)
        seconds = time.perf_counter() - t0
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return {"schema": SCHEMA_VERSION, "kind": "frontier", "workload": workload,
            "commit": commit[0], "dirty": bool(commit[1]), "machine": machine_info(),
            "machine_id": machine_id(), "started_at": started, "repeat": repeat,
            "threads": threads, "seconds": round(seconds, 1),
            "loadavg": {"start": list(load0), "end": list(_load())},
            "input": {"bytes": len(data), "sha256": "sha256:" + inp.sha256, **(source or {})},
            "reference": REFERENCE, "baseline": BASELINE, "target_ratio": TARGET_RATIO,
            "libraries": library_versions(), "results": rows}


# ---------------------------------------------------------------------------- storing


def default_root() -> Path | None:
    """`<repo>/.perf/frontier` of the repository around the working directory, or None."""
    from perf.gitrefs import repo_root

    try:
        return repo_root() / ".perf" / "frontier"
    except ApkImageError:
        return None


def result_path(root: Path, doc: dict) -> Path:
    stamp = doc["started_at"].replace(":", "").replace("-", "")
    commit = doc["commit"][:12] + ("-dirty" if doc["dirty"] else "")
    name = "".join(ch if ch.isalnum() or ch in "._+-" else "_" for ch in doc["workload"])
    return root / doc["machine_id"] / commit / f"{stamp}-{name[:60]}.json"


def save_results(root: Path, doc: dict) -> Path:
    path = result_path(root, doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def iter_results(root: Path, machine: str | None = None) -> Iterator[dict]:
    """Stored frontier documents (one machine's, or all), unreadable files skipped."""
    if not root.is_dir():
        return
    dirs = [root / machine] if machine else sorted(root.iterdir())
    for mdir in dirs:
        if not mdir.is_dir():
            continue
        for path in sorted(mdir.glob("*/*.json")):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if (isinstance(doc, dict) and doc.get("kind") == "frontier"
                    and doc.get("schema") == SCHEMA_VERSION
                    and isinstance(doc.get("results"), list)):
                doc["_path"] = str(path)
                yield doc


def latest_results(root: Path, machine: str | None = None) -> list[dict]:
    """The newest document per workload, by workload name."""
    newest: dict[str, dict] = {}
    for doc in iter_results(root, machine):
        old = newest.get(doc["workload"])
        if old is None or doc["started_at"] >= old["started_at"]:
            newest[doc["workload"]] = doc
    return [newest[w] for w in sorted(newest)]


# ---------------------------------------------------------------------------- analysis


def measured(doc: dict) -> list[dict]:
    return [r for r in doc["results"] if not r.get("skipped") and not r.get("error")
            and r.get("single") and r.get("ratio") is not None]


def _row(doc: dict, name: str) -> dict | None:
    return next((r for r in measured(doc) if r["name"] == name), None)


def pareto(rows: Sequence[dict]) -> list[dict]:
    """Rows no other row beats on both single-core MB/s and bytes, fastest first."""
    pts = sorted(rows, key=lambda r: (-r["single"]["mb_s"], r["bytes"]))
    out, best = [], float("inf")
    for r in pts:
        if r["bytes"] < best:
            out.append(r)
            best = r["bytes"]
    return out


def recommend(doc: dict) -> dict:
    """What meets "<= target_ratio x zlib-6's bytes at <= the baseline's CPU per MB" among
    the one-member gzip settings, and the nearest on each side when nothing does."""
    target = doc.get("target_ratio", TARGET_RATIO)
    base = _row(doc, doc.get("baseline", BASELINE))
    base_cpu = base["single"]["cpu_s_per_mb"] if base else None
    gz = [r for r in measured(doc) if r["format"] == "gzip" and r["single_member"]]
    out: dict[str, Any] = {"target_ratio": target, "baseline": doc.get("baseline", BASELINE),
                           "baseline_cpu_s_per_mb": base_cpu,
                           "baseline_ratio": base["ratio"] if base else None}
    if base_cpu is None:
        out["verdict"] = "baseline not measured"
        return out

    def brief(r: dict | None) -> dict | None:
        if r is None:
            return None
        return {"name": r["name"], "ratio": r["ratio"], "cpu_s_per_mb":
                r["single"]["cpu_s_per_mb"], "cpu_vs_baseline": r["cpu_vs_baseline"],
                "mb_s": r["single"]["mb_s"],
                "threads_mb_s": (r.get("threads") or {}).get("mb_s"),
                "builder": r["builder"]}

    meets = [r for r in gz if r["ratio"] <= target and r["single"]["cpu_s_per_mb"] <= base_cpu]
    small_enough = [r for r in gz if r["ratio"] <= target]
    cheap_enough = [r for r in gz if r["single"]["cpu_s_per_mb"] <= base_cpu]
    out["meets"] = [brief(r) for r in sorted(meets, key=lambda r: r["bytes"])]
    out["cheapest_within_ratio"] = brief(min(small_enough, key=lambda r: r["single"][
        "cpu_s_per_mb"], default=None))
    out["smallest_within_cpu"] = brief(min(cheap_enough, key=lambda r: r["bytes"],
                                           default=None))
    if meets:
        best = out["meets"][0]
        out["verdict"] = (f"{best['name']} meets it: {best['ratio']:.3f}x zlib-6 at "
                          f"{best['cpu_vs_baseline']:.2f}x {out['baseline']}'s CPU per MB")
    else:
        parts = [f"nothing meets <= {target:.2f}x at <= {out['baseline']}'s "
                 f"{base_cpu * 1000:.2f} ms/MB"]
        c, s = out["cheapest_within_ratio"], out["smallest_within_cpu"]
        if c:
            parts.append(f"cheapest within {target:.2f}x: {c['name']} ({c['ratio']:.3f}x, "
                         f"{c['cpu_vs_baseline']:.2f}x the CPU)")
        if s:
            parts.append(f"smallest within the CPU: {s['name']} ({s['ratio']:.3f}x, "
                         f"{s['cpu_vs_baseline']:.2f}x the CPU)")
        out["verdict"] = "; ".join(parts)
    return out


def _fmt(v: float | None, spec: str, dash: str = "–") -> str:
    return dash if v is None else format(v, spec)


def table_rows(doc: dict) -> list[list[str]]:
    """The table as text cells (header first), for the terminal and the HTML report."""
    head = ["setting", "mode", "bytes", "x zlib-6", "1-core MB/s", "CPU ms/MB",
            f"x {doc.get('baseline', BASELINE)} CPU", f"{doc.get('threads', THREADS)}-thread "
            "MB/s", "note"]
    rows = [head]
    for r in doc["results"]:
        single, par = r.get("single") or {}, r.get("threads") or {}
        note = r.get("skipped") or (f"ERROR: {r['error']}" if r.get("error") else r["note"])
        tb = r.get("threads_bytes")
        if tb is not None and r.get("bytes") is not None and tb != r["bytes"]:
            note = (note + "; " if note else "") + f"{tb:,} bytes on {par.get('n', '')} threads"
        if r.get("builder"):
            note = (note + "; " if note else "") + "builder: compress=" + r["builder"]
        cpu = single.get("cpu_s_per_mb")
        rows.append([r["name"], r["mode"], _fmt(r.get("bytes"), ","),
                     _fmt(r.get("ratio"), ".3f"), _fmt(single.get("mb_s"), ".1f"),
                     _fmt(cpu * 1000 if cpu is not None else None, ".2f"),
                     _fmt(r.get("cpu_vs_baseline"), ".2f"), _fmt(par.get("mb_s"), ".1f"),
                     note or ""])
    return rows


def format_table(doc: dict) -> str:
    rows = table_rows(doc)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w)
                 for i, (c, w) in enumerate(zip(row[:-1], widths, strict=True))]
        lines.append("  ".join(cells) + ("  " + row[-1] if row[-1] else ""))
    return "\n".join(lines)


def describe(doc: dict) -> str:
    inp = doc["input"]
    return (f"workload {doc['workload']}: layer tar {inp['bytes'] / MB:.1f} MB "
            f"({inp.get('diff_id') or inp['sha256']}), commit {doc['commit'][:12]}"
            f"{' (dirty)' if doc['dirty'] else ''}, machine {doc['machine_id']} "
            f"({doc['machine'].get('cpu_model')}, {doc['machine'].get('cores')} cores), "
            f"median of {doc['repeat']} rounds, {doc['seconds']:.0f} s, load average "
            f"{doc['loadavg']['start'][0]:.2f} -> {doc['loadavg']['end'][0]:.2f}")


# ---------------------------------------------------------------------------- chart

FAMILY_COLOURS = {"zlib": "#1f77b4", "isal": "#d62728", "zlib-ng": "#2ca02c",
                  "libdeflate": "#9467bd", "gzip": "#7f7f7f", "pigz": "#8c564b",
                  "zstd": "#ff7f0e"}


def chart_stem(out_dir: Path, workload: str) -> Path:
    return out_dir / ("frontier-" + "".join(ch if ch.isalnum() or ch in "._+-" else "_"
                                            for ch in workload))


def _one_member(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if r["format"] == "gzip" and r["single_member"]]


def _place_labels(ax: Any, points: list[tuple[float, float, str, str]]) -> None:
    """Label each point beside it where the text overlaps no label placed before (greedy
    over eight offsets; the first when none is free)."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    offsets = [(5, 3, "left"), (5, -10, "left"), (-5, 3, "right"), (-5, -10, "right"),
               (5, 11, "left"), (5, -18, "left"), (-5, 11, "right"), (-5, -18, "right")]
    for x, y, text, colour in sorted(points, key=lambda p: (p[0], p[1])):
        chosen = None
        for dx, dy, ha in offsets:
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy),
                              fontsize=7, color=colour, ha=ha)
            box = ann.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(o) for o in placed):
                chosen = (ann, box)
                break
            ann.remove()
        if chosen is None:
            dx, dy, ha = offsets[0]
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy),
                              fontsize=7, color=colour, ha=ha)
            chosen = (ann, ann.get_window_extent(renderer))
        placed.append(chosen[1])


def render_chart(doc: dict, out_dir: Path) -> list[Path]:
    """PNG + SVG: x = single-core MB/s (log), y = bytes relative to zlib-6, one labelled
    point per measured setting (hollow: blocks/members mode, square: command line); the
    Pareto frontier of the one-member gzip settings (what a tar+gzip layer can be) as a line;
    the target region (<= target ratio, at least the baseline's single-core speed) shaded.
    The y axis spans the gzip settings: a zstd point below it sits on the bottom edge as a
    triangle, its ratio in the label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = measured(doc)
    if not rows:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    gz = [r for r in rows if r["format"] == "gzip"] or rows
    ys = [r["ratio"] for r in gz]
    y_lo, y_hi = min(ys + [1.0]) - 0.02, max(ys) + 0.02
    xs = [r["single"]["mb_s"] for r in rows]
    x_lo, x_hi = min(xs) / 1.3, max(xs) * 1.6
    fig, ax = plt.subplots(figsize=(13, 8))
    ax.set_xscale("log")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    labels: list[tuple[float, float, str, str]] = []
    for r in rows:
        x, y = r["single"]["mb_s"], r["ratio"]
        colour = FAMILY_COLOURS.get(r["family"], "black")
        hollow = r["mode"] in ("blocks", "members")
        marker, text = ("s" if r["mode"] == "cli" else "o"), r["name"]
        if y < y_lo or y > y_hi:
            marker, text = ("v" if y < y_lo else "^"), f"{r['name']} ({y:.2f})"
            y = y_lo + 0.004 if y < y_lo else y_hi - 0.004
        ax.scatter([x], [y], s=42, marker=marker, facecolors="none" if hollow else colour,
                   edgecolors=colour, zorder=3)
        labels.append((x, y, text, colour))
    front = pareto(_one_member(rows))
    ax.plot([r["single"]["mb_s"] for r in front], [r["ratio"] for r in front],
            color="black", linewidth=0.8, alpha=0.5, zorder=2,
            label="Pareto frontier (one-member gzip)")
    target = doc.get("target_ratio", TARGET_RATIO)
    base = _row(doc, doc.get("baseline", BASELINE))
    ax.axhline(1.0, color="#1f77b4", linewidth=0.6, linestyle=":")
    ax.axhline(target, color="green", linewidth=0.9, linestyle="--",
               label=f"{target:.2f}x zlib-6")
    if base:
        bx = base["single"]["mb_s"]
        ax.axvline(bx, color="#d62728", linewidth=0.9, linestyle="--",
                   label=f"{base['name']} on one core ({bx:.0f} MB/s)")
        ax.fill_between([bx, x_hi], [y_lo, y_lo], [target, target], color="green",
                        alpha=0.10, label="target: smaller, no more CPU (approx.; the table "
                        "decides on CPU s/MB)")
    ax.set_xlabel("single-core throughput, MB/s of uncompressed input (log scale)")
    ax.set_ylabel(f"output bytes / {doc.get('reference', REFERENCE)}'s")
    inp = doc["input"]
    ax.set_title(f"Compressor frontier: {doc['workload']} layer tar "
                 f"({inp['bytes'] / MB:.0f} MB), {doc['commit'][:10]}, "
                 f"{doc['machine'].get('cpu_model')}", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    handles, names = ax.get_legend_handles_labels()
    for fam, colour in FAMILY_COLOURS.items():
        if any(r["family"] == fam for r in rows):
            handles.append(plt.Line2D([], [], marker="o", linestyle="", color=colour))
            names.append(fam)
    handles.append(plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="none",
                              color="black"))
    names.append("blocks / members mode (1 thread)")
    handles.append(plt.Line2D([], [], marker="s", linestyle="", color="black"))
    names.append("command line")
    ax.legend(handles, names, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    _place_labels(ax, labels)
    stem = chart_stem(out_dir, doc["workload"])
    written = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=110)
        written.append(path)
    plt.close(fig)
    return written


# ---------------------------------------------------------------------------- report


def table_html(doc: dict) -> str:
    rows = table_rows(doc)
    rec = recommend(doc)
    good = {m["name"] for m in rec.get("meets") or []}
    head = "".join(f"<th>{escape(c)}</th>" for c in rows[0])
    body = []
    for r, cells in zip(doc["results"], rows[1:], strict=True):
        style = " style='background:#e6f4e6'" if r["name"] in good else (
            " style='color:#888'" if r.get("skipped") or r.get("error") else "")
        body.append(f"<tr{style}>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def section_html(out_dir: Path, root: Path | None = None, machine: str | None = None) -> str:
    """The report's "Compressor frontier" section: per workload, the chart (rendered into
    `out_dir`) and the table of the latest stored results of this machine (`machine`:
    default this one's id)."""
    from perf.machine import machine_id

    root = root if root is not None else default_root()
    docs = latest_results(root, machine or machine_id()) if root is not None else []
    parts = ["<h2>Compressor frontier</h2>"]
    if not docs:
        parts.append("<p>No frontier results yet: run <code>apkperf frontier</code>.</p>")
        return "\n".join(parts)
    parts.append(f"<p>Output bytes against single-core throughput on each workload's layer "
                 f"tar; target: &le; {TARGET_RATIO:.2f}x zlib-6's bytes at no more CPU per MB "
                 f"than {escape(BASELINE)}. MB = 10<sup>6</sup> bytes of input.</p>")
    for doc in docs:
        try:
            parts.append(_doc_html(doc, out_dir))
        except (KeyError, TypeError, ValueError) as exc:
            parts.append(f"<p>{escape(str(doc.get('_path', '?')))}: cannot render "
                         f"({escape(str(exc))})</p>")
    return "\n".join(parts)


def _doc_html(doc: dict, out_dir: Path) -> str:
    charts = [p for p in render_chart(doc, out_dir) if p.suffix == ".png"]
    parts = [f"<h3>{escape(doc['workload'])}</h3><p>{escape(describe(doc))}.</p>",
             f"<p><b>{escape(recommend(doc)['verdict'])}</b></p>"]
    for p in charts:
        parts.append(f"<p><a href='{p.with_suffix('.svg').name}'><img src='{p.name}' "
                     f"alt='compressor frontier {escape(doc['workload'])}'></a></p>")
    parts.append(table_html(doc))
    return "\n".join(parts)
