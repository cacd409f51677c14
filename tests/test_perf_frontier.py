"""apkperf frontier (perf/frontier.py): every candidate's output decompresses to the input,
the ratios and rates are computed from what was measured, a missing tool is a skipped row
(never a number from something else), the zlib-ng block and serial formats are the
builder's, and the chart and report section render from stored results."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import random
import zlib
from html import escape
from pathlib import Path

import pytest

from builder.compress.gzip import compress_serial, parse_gzip
from builder.deflate.sink import GzipSink
from perf import frontier as fr
from perf import stats
from perf.cli import build_parser
from perf.report import write_report

COMMIT = ("1" * 40, False)
QUICK = ("zlib:1,zlib:6,isal:1,isal-mt:1,zlib-ng:3,zlib-ng-mt:3,libdeflate:3,"
         "libdeflate-mm:3,gzip -1,pigz -1,zstd:3")


def synthetic_tar(size: int = 1_500_000, seed: int = 7) -> bytes:
    """Bytes shaped like a layer: text, repeats, zero runs and incompressible stretches,
    over more than one 1 MiB block and ending in a partial one."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz_/.", k=rng.randint(2, 12)))
             for _ in range(400)]
    out = bytearray()
    while len(out) < size:
        kind = rng.random()
        if kind < 0.5:
            out += b" ".join(rng.choices(words, k=200)) + b"\n"
        elif kind < 0.7:
            out += bytes(rng.randint(512, 8192))
        elif kind < 0.85:
            out += rng.randbytes(rng.randint(256, 4096))
        else:
            start = rng.randrange(max(1, len(out)))
            out += out[start:start + rng.randint(64, 20000)]
    return bytes(out[:size])


@pytest.fixture(scope="module")
def data() -> bytes:
    return synthetic_tar()


@pytest.fixture(scope="module")
def doc(data: bytes) -> dict:
    return fr.run_frontier(data, workload="synthetic", repeat=2, candidates=fr.select(QUICK),
                           commit=COMMIT)


def _decompress(row: dict, blob: bytes) -> bytes:
    if row["format"] == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return gzip.decompress(blob)  # every member


def test_every_candidate_roundtrips_and_ratios_are_computed_right(doc: dict, data: bytes,
                                                                  tmp_path: Path) -> None:
    rows = {r["name"]: r for r in doc["results"]}
    assert set(rows) == {c.name for c in fr.select(QUICK)}
    assert doc["input"]["bytes"] == len(data)
    assert doc["input"]["sha256"] == "sha256:" + hashlib.sha256(data).hexdigest()
    ref = rows[fr.REFERENCE]
    gz = zlib.compressobj(6, zlib.DEFLATED, 31, 9)  # zlib's own gzip framing, same sizes
    assert ref["bytes"] == len(gz.compress(data) + gz.flush())
    base_cpu = rows[fr.BASELINE]["single"]["cpu_s_per_mb"]
    inp = fr.Input(data, tmp_path)
    by_name = {c.name: c for c in fr.CANDIDATES}
    for name, row in rows.items():
        if row["skipped"]:
            assert row["bytes"] is None and row["single"] is None
            continue
        assert row["error"] is None, (name, row["error"])
        # an independent run of the candidate: same size, and it inflates to the input
        sample = by_name[name].run(inp, 1, keep=True)
        assert sample.size == row["bytes"], name
        assert _decompress(row, sample.out) == data, name
        if row["single_member"]:
            d = zlib.decompressobj(31)
            assert d.decompress(sample.out) == data and d.eof and not d.unused_data, name
        assert row["ratio"] == round(row["bytes"] / ref["bytes"], 5)
        single = row["single"]
        assert len(single["wall_s"]) == len(single["cpu_s"]) == doc["repeat"] == 2
        assert single["mb_s"] == round(len(data) / 1e6 / stats.median(single["wall_s"]), 2)
        assert single["cpu_s_per_mb"] == round(stats.median(single["cpu_s"])
                                               / (len(data) / 1e6), 7)
        assert row["cpu_vs_baseline"] == round(single["cpu_s_per_mb"] / base_cpu, 4)
        if by_name[name].parallel:
            assert row["threads"]["n"] == fr.THREADS and len(row["threads"]["wall_s"]) == 2
            if by_name[name].mode != "cli":  # the builder's modes: same bytes on any count
                assert row["threads_bytes"] == row["bytes"]
        else:
            assert row["threads"] is None
    assert rows["libdeflate-mm:3"]["single_member"] is False
    assert rows[fr.BASELINE]["cpu_vs_baseline"] == 1.0


def test_block_and_serial_formats_are_the_builders(data: bytes, tmp_path: Path) -> None:
    from isal import isal_zlib

    inp = fr.Input(data, tmp_path)
    for level in (0, 1, 3):
        sink = GzipSink(tmp_path / "mt.gz", "isal", level, threads=2, block_size=1 << 20)
        with sink:
            for piece in inp.chunks:
                sink.write(piece)
            sink.close()
        want = (tmp_path / "mt.gz").read_bytes()
        assert fr.gzip_blocks(isal_zlib, level, inp.chunks, 2) == want
        assert fr.gzip_blocks(isal_zlib, level, inp.chunks, 1) == want
    (tmp_path / "layer.tar").write_bytes(data)
    for level in (1, 6):
        compress_serial(tmp_path / "layer.tar", tmp_path / "s.gz", level, "zlib")
        assert fr.gzip_serial(zlib, level, inp.chunks) == (tmp_path / "s.gz").read_bytes()
    # the candidates named like builder settings are those settings
    for c in fr.CANDIDATES:
        if c.builder and c.fmt == "gzip":
            setting = parse_gzip(c.builder)
            assert setting is not None and setting.level == c.level
            assert (setting.block_size > 0) == (c.mode == "blocks")


def test_zlib_ng_blocks_roundtrip_over_uneven_blocks() -> None:
    pytest.importorskip("zlib_ng")
    from zlib_ng import zlib_ng

    data = synthetic_tar(2_600_000, seed=3)
    chunks = [data[i:i + fr.UNIT] for i in range(0, len(data), fr.UNIT)]
    blob = fr.gzip_blocks(zlib_ng, 3, chunks, 2)
    d = zlib.decompressobj(31)
    assert d.decompress(blob) == data and d.eof and not d.unused_data
    assert fr.gzip_blocks(zlib_ng, 3, chunks, 1) == blob


def test_missing_tools_are_skipped_with_a_note_never_measured(data: bytes,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    real_which = fr.shutil.which
    monkeypatch.setattr(fr.shutil, "which",
                        lambda name: None if name == "pigz" else real_which(name))
    ghost_cli = fr.Candidate("ghost -6", "gzip", 6, "cli", False, None,
                             needs="no-such-compressor-here")
    ghost_mod = fr.Candidate("ghost:1", "zlib-ng", 1, "serial", False, None,
                             needs="no_such_module_here")
    cands = [*fr.select("pigz -1"), ghost_cli, ghost_mod]
    doc = fr.run_frontier(data[:300_000], workload="t", repeat=1, candidates=cands,
                          commit=COMMIT)
    rows = {r["name"]: r for r in doc["results"]}
    assert rows["pigz -1"]["skipped"] == "pigz not installed"
    assert rows["ghost -6"]["skipped"] == "no-such-compressor-here not installed"
    assert rows["ghost:1"]["skipped"] == "Python module no_such_module_here not installed"
    for name in ("pigz -1", "ghost -6", "ghost:1"):
        r = rows[name]
        assert r["bytes"] is None and r["ratio"] is None and r["single"] is None
        assert r["threads"] is None and r["cpu_vs_baseline"] is None
    text = fr.format_table(doc)
    assert "pigz not installed" in text
    assert "pigz -1" not in [r["name"] for r in fr.measured(doc)]
    assert doc["libraries"]["pigz"] is None


@dataclasses.dataclass(frozen=True)
class _Broken(fr.Candidate):
    damage: str = "flip"

    def run(self, inp: fr.Input, threads: int, keep: bool) -> fr.Sample:
        good = gzip.compress(inp.data, 1, mtime=0)
        if self.damage == "flip":
            bad = good[:-8] + bytes([good[-8] ^ 1]) + good[-7:]  # CRC off by one bit
        elif self.damage == "members":
            half = len(inp.data) // 2
            bad = (gzip.compress(inp.data[:half], 1, mtime=0)
                   + gzip.compress(inp.data[half:], 1, mtime=0))
        else:
            bad = good[: len(good) // 2]
        return fr.Sample(bad if keep else None, len(bad), 0.01, 0.01)


@pytest.mark.parametrize("damage,message", [("flip", "corrupt"), ("members", "2 gzip members"),
                                            ("truncate", "truncated")])
def test_output_that_does_not_roundtrip_is_an_error_not_a_result(data: bytes, damage: str,
                                                                 message: str) -> None:
    broken = _Broken("broken:1", "zlib", 1, "serial", False, None, damage=damage)
    doc = fr.run_frontier(data[:200_000], workload="t", repeat=2,
                          candidates=[*fr.select("zlib:6"), broken], commit=COMMIT)
    row = next(r for r in doc["results"] if r["name"] == "broken:1")
    assert message in row["error"]
    assert row["ratio"] is None and row["single"] is None
    assert "broken:1" not in [r["name"] for r in fr.measured(doc)]
    assert "ERROR" in fr.format_table(doc)


def _row(name: str, ratio: float, cpu: float, *, fmt: str = "gzip", single_member: bool = True,
         mode: str = "serial", family: str = "zlib") -> dict:
    return {"name": name, "family": family, "level": 1, "mode": mode, "format": fmt,
            "parallel": mode == "blocks", "builder": None, "note": "", "skipped": None,
            "error": None, "threads_bytes": None,
            "single_member": single_member if fmt == "gzip" else None,
            "bytes": int(ratio * 1_000_000), "ratio": ratio,
            "single": {"mb_s": 1 / cpu, "cpu_s_per_mb": cpu,
                       "wall_s": [1.0], "cpu_s": [1.0], "wall_mad_s": 0.0},
            "threads": None, "cpu_vs_baseline": None}


def _doc(rows: list[dict], workload: str = "w", started: str = "2026-01-01T00:00:00Z") -> dict:
    base = next(r for r in rows if r["name"] == fr.BASELINE)
    for r in rows:
        r["cpu_vs_baseline"] = round(r["single"]["cpu_s_per_mb"]
                                     / base["single"]["cpu_s_per_mb"], 4)
    return {"schema": fr.SCHEMA_VERSION, "kind": "frontier", "workload": workload,
            "commit": "ab" * 20, "dirty": False, "machine": {"cpu_model": "cpu", "cores": 2},
            "machine_id": "m-1", "started_at": started, "repeat": 3, "threads": 2,
            "seconds": 1.0, "loadavg": {"start": [0.1, 0, 0], "end": [0.2, 0, 0]},
            "input": {"bytes": 10_000_000, "sha256": "sha256:00"}, "reference": fr.REFERENCE,
            "baseline": fr.BASELINE, "target_ratio": fr.TARGET_RATIO, "libraries": {},
            "results": rows}


def test_recommend_meets_and_nearest_on_each_side() -> None:
    rows = [_row("zlib:6", 1.0, 40e-3), _row("isal-mt:1", 1.14, 2.5e-6, mode="blocks"),
            _row("fast-small", 1.04, 2.4e-6), _row("zstd:1", 0.7, 1e-6, fmt="zstd"),
            _row("mm", 1.01, 1e-6, single_member=False)]
    rec = fr.recommend(_doc(rows))
    assert [m["name"] for m in rec["meets"]] == ["fast-small"]
    assert rec["verdict"].startswith("fast-small meets it")
    rows = [_row("zlib:6", 1.0, 40e-3), _row("isal-mt:1", 1.14, 2.5e-6, mode="blocks"),
            _row("isal-mt:3", 1.09, 3.5e-6), _row("libdeflate:2", 1.02, 6e-6),
            _row("libdeflate:1", 1.06, 4.5e-6), _row("zstd:1", 0.7, 1e-6, fmt="zstd"),
            _row("mm", 1.01, 1e-6, single_member=False)]
    rec = fr.recommend(_doc(rows))
    assert rec["meets"] == []  # zstd (other media type) and multi-member never count
    assert rec["cheapest_within_ratio"]["name"] == "libdeflate:2"
    assert rec["smallest_within_cpu"]["name"] == "isal-mt:1"
    assert "nothing meets" in rec["verdict"] and "libdeflate:2 (1.020x, 2.40x" in rec["verdict"]
    assert [r["name"] for r in fr.pareto(fr.measured(_doc(rows)))][0] == "zstd:1"


def test_chart_and_report_section_render_from_stored_results(doc: dict, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    root = tmp_path / "frontier"
    out = tmp_path / "report"
    assert "No frontier results yet" in fr.section_html(out, root, machine="m-none")
    older = dict(doc, started_at="2000-01-01T00:00:00Z", results=[])
    fr.save_results(root, older)
    path = fr.save_results(root, doc)
    assert path.parent.parent.name == doc["machine_id"]
    (path.parent / "junk.json").write_text("{not json")
    (path.parent / "other.json").write_text(json.dumps({"kind": "peers"}))
    latest = fr.latest_results(root, doc["machine_id"])
    assert [d["started_at"] for d in latest] == [doc["started_at"]]
    html = fr.section_html(out, root, machine=doc["machine_id"])
    assert "<h2>Compressor frontier</h2>" in html and "<table>" in html
    assert "frontier-synthetic.png" in html and "frontier-synthetic.svg" in html
    assert (out / "frontier-synthetic.png").stat().st_size > 10_000
    assert (out / "frontier-synthetic.svg").read_text().lstrip().startswith("<?xml")
    for row in doc["results"]:
        assert f"<td>{row['name']}</td>" in html.replace("&gt;", ">")
    assert escape(fr.recommend(doc)["verdict"]) in html
    # write_report picks the section up (from the repository's results root)
    monkeypatch.setattr(fr, "default_root", lambda: root)
    monkeypatch.setattr("perf.machine.machine_id", lambda info=None: doc["machine_id"])
    index = write_report([], tmp_path / "site")
    page = index.read_text()
    assert "<h2>Compressor frontier</h2>" in page and "frontier-synthetic.png" in page
    assert "frontier-synthetic.svg</a></li>" not in page  # not listed among the profiles


def test_chart_handles_zstd_below_the_gzip_range(tmp_path: Path) -> None:
    rows = [_row("zlib:6", 1.0, 40e-3), _row("isal-mt:1", 1.14, 2.5e-6, mode="blocks",
                                             family="isal"),
            _row("zstd:3", 0.6, 3e-6, fmt="zstd", family="zstd")]
    paths = fr.render_chart(_doc(rows), tmp_path)
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    assert "zstd:3 (0.60)" in (tmp_path / "frontier-w.svg").read_text()
    assert fr.render_chart(_doc([_row("isal-mt:1", 1.1, 1e-6)]) | {"results": []},
                           tmp_path / "none") == []


def test_select_always_keeps_reference_and_baseline() -> None:
    names = [c.name for c in fr.select("zstd:*")]
    assert names == ["zlib:6", "isal-mt:1", "zstd:1", "zstd:3", "zstd:6", "zstd:9"]
    assert len(fr.select(None)) == len(fr.CANDIDATES)
    assert len({c.name for c in fr.CANDIDATES}) == len(fr.CANDIDATES)


def test_layer_tar_from_layout_checks_the_diff_id(tmp_path: Path) -> None:
    tar = synthetic_tar(100_000)
    layer = gzip.compress(tar, 1, mtime=0)

    def put(obj: bytes) -> str:
        digest = hashlib.sha256(obj).hexdigest()
        (tmp_path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (tmp_path / "blobs" / "sha256" / digest).write_bytes(obj)
        return "sha256:" + digest

    def layout(diff_id: str) -> None:
        cfg = put(json.dumps({"rootfs": {"diff_ids": [diff_id]}}).encode())
        man = put(json.dumps({"config": {"digest": cfg}, "layers": [
            {"digest": put(layer), "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
        ]}).encode())
        (tmp_path / "index.json").write_text(json.dumps({"manifests": [{"digest": man}]}))

    good = "sha256:" + hashlib.sha256(tar).hexdigest()
    layout(good)
    assert fr.layer_tar_from_layout(tmp_path) == (tar, good)
    layout("sha256:" + "0" * 64)
    with pytest.raises(fr.FrontierError, match="diffID"):
        fr.layer_tar_from_layout(tmp_path)


def test_cli_registers_frontier() -> None:
    args = build_parser().parse_args(["frontier", "--workload", "go", "--repeat", "5",
                                      "--only", "isal*", "--no-save"])
    assert (args.workload, args.repeat, args.only, args.no_save) == ("go", 5, "isal*", True)


@pytest.mark.slow
def test_build_layer_tar_of_the_small_workload(small_workload, tmp_path: Path) -> None:
    tar, source = fr.build_layer_tar(small_workload.config_path, tmp_path)
    assert source["diff_id"] == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert tar[257:262] == b"ustar" and len(tar) % 512 == 0
    assert not (tmp_path / "image").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_all_candidates_roundtrip(data: bytes) -> None:
    doc = fr.run_frontier(data, workload="synthetic", repeat=1, commit=COMMIT)
    rows = doc["results"]
    assert len(rows) == len(fr.CANDIDATES)
    for r in rows:
        assert r["error"] is None, (r["name"], r["error"])
        assert r["skipped"] or (r["bytes"] and r["ratio"] and r["single"]["mb_s"] > 0)
    zl = {r["level"]: r["bytes"] for r in rows if r["family"] == "zlib" and r["mode"] == "serial"}
    assert zl[1] > zl[6] >= zl[9]
