"""Run records, gate rules, measurement of a process tree, trend/report rendering — all
without the builder (synthetic records)."""

from __future__ import annotations

import copy
import json
import random
import sys

import pytest

from builder.errors import FormatError
from perf import gate, records, stats
from perf.compare import compare_records, format_rows
from perf.report import write_report
from perf.runner import format_run_table, measure
from perf.trend import render_trends
from tests.helpers import SPANS, make_rec


def test_spans_to_stages_and_image():
    stages = records.stages_from_spans(SPANS)
    assert stages["compress"]["wall_s"] == pytest.approx(0.9)  # two archs summed
    assert stages["compress"]["bytes_out"] == 55
    assert stages["compress"]["attrs"]["level"] == 6
    assert stages["compress"]["attrs"]["blocks"] == 7  # counters add up across archs
    image = records.image_from_spans(SPANS)
    assert image["digest"].startswith("sha256:aaa")
    assert image["diff_ids"] == ["sha256:d2", "sha256:d1"]  # sorted by arch
    assert records.compressor_of(stages, image) == "zlib:6"


def test_record_schema_roundtrip(tmp_path):
    rec = make_rec()
    path = records.save_record(tmp_path, rec)
    assert path.parent.parent.name == rec["machine_id"]
    assert path.parent.name == "1" * 12
    assert path.name.endswith("-small-hot-reference-reference-0.json")
    loaded = records.load_records(tmp_path, scenario="hot")
    assert len(loaded) == 1 and loaded[0]["wall_s"] == rec["wall_s"]
    assert records.load_records(tmp_path, scenario="cold") == []


@pytest.mark.parametrize(("field", "value", "message"), [
    ("wall_s", None, "lacks field 'wall_s'"),
    ("dirty", "no", "'dirty' has type str"),
    ("schema", 99, "schema 99"),
])
def test_record_schema_rejects(field, value, message):
    rec = make_rec()
    if value is None:
        del rec[field]
    else:
        rec[field] = value
    with pytest.raises(FormatError, match=message):
        records.validate_record(rec)


def test_record_rejects_bad_stage():
    rec = copy.deepcopy(make_rec())
    del rec["stages"]["fetch"]["cpu_s"]
    with pytest.raises(FormatError, match="stage 'fetch' field 'cpu_s'"):
        records.validate_record(rec)


def test_measure_counts_cpu_of_children(tmp_path):
    # the parent sleeps while a child burns CPU: rusage from wait4 must include the child
    code = ("import subprocess,sys;subprocess.run([sys.executable,'-c',"
            "'import time\\nt=time.process_time()\\nwhile time.process_time()-t<0.4: pass'])")
    res = measure([sys.executable, "-c", code], stdout=tmp_path / "o", stderr=tmp_path / "e")
    assert res.returncode == 0
    assert res.cpu_s >= 0.35
    assert res.wall_s >= res.cpu_s * 0.8
    assert res.peak_rss_mb > 5
    bad = measure([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert bad.returncode == 3


def test_measure_timeout_kills(tmp_path):
    res = measure([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert res.returncode != 0
    assert res.wall_s < 10


def _ab_records(slow_compress: float, seed: int = 0, n: int = 5) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for r in range(n):
        out.append(make_rec("A", r, scale=rng.uniform(0.97, 1.03)))
        out.append(make_rec("B", r, scale=rng.uniform(0.97, 1.03), compress=0.9 * slow_compress))
    return out


def test_a_slowdown_under_the_floor_is_worded_but_does_not_gate():
    # compress x2 (0.9 s -> 1.8 s scaled to 9 ms -> 18 ms): clear statistically, tiny in seconds
    recs = []
    for r in range(5):
        recs.append(make_rec("A", r, compress=0.009))
        recs.append(make_rec("B", r, compress=0.018))
    rows = compare_records(recs, "A", "B", min_abs=0.05)
    by = {r.stage: r for r in rows}
    assert by["compress"].verdict == stats.NO_CHANGE
    assert by["compress"].wording == "slower (under the 0.05 s floor)"
    assert gate.evaluate(rows, gate.Thresholds(total_pct=1, stage_pct=1)) == []
    assert "slower (under the 0.05 s floor)" in format_rows(rows, "A", "B")


def test_compare_and_gate_on_synthetic_records():
    rows = compare_records(_ab_records(1.0), "A", "B")
    assert {r.stage for r in rows} == {"total", "fetch", "compress"}
    assert all(r.verdict == stats.NO_CHANGE for r in rows)
    assert gate.evaluate(rows, gate.Thresholds()) == []

    rows = compare_records(_ab_records(2.0), "A", "B")
    by = {r.stage: r for r in rows}
    assert by["compress"].verdict == stats.SLOWER
    assert by["compress"].ratio == pytest.approx(2.0, rel=0.1)
    assert by["fetch"].verdict == stats.NO_CHANGE
    fails = gate.evaluate(rows, gate.Thresholds())
    assert {f.row.stage for f in fails} == {"compress", "total"}
    assert "hot/compress" in fails[-1].describe() or "hot/compress" in fails[0].describe()
    # a per-stage threshold above the slowdown lets it pass; the total still fails
    th = gate.Thresholds(total_pct=200, per_stage=gate.parse_stage_thresholds(["compress=150"]))
    assert gate.evaluate(rows, th) == []


def test_stage_threshold_parsing():
    assert gate.parse_stage_thresholds(["compress=15", "total=5"]) == {"compress": 15.0,
                                                                        "total": 5.0}
    with pytest.raises(ValueError, match="STAGE=PERCENT"):
        gate.parse_stage_thresholds(["zip=3"])
    with pytest.raises(ValueError, match="not a number"):
        gate.parse_stage_thresholds(["compress=x"])


def test_run_table_has_ratio():
    table = format_run_table(_ab_records(2.0))
    assert "== hot" in table
    compress_line = next(line for line in table.splitlines() if line.startswith("compress"))
    assert "x1.9" in compress_line or "x2.0" in compress_line


def test_trend_and_report_render(tmp_path):
    recs = []
    for i, commit in enumerate(["a" * 40, "b" * 40, "c" * 40]):
        for r in range(3):
            recs.append(make_rec("reference", r, scale=1 + 0.2 * i, commit=commit,
                                 started=f"2026-01-0{i + 1}T00:00:0{r}.000+00:00", job=f"j{i}"))
            recs.append(make_rec("fast", r, scale=0.5 + 0.1 * i, commit=commit,
                                 started=f"2026-01-0{i + 1}T00:00:0{r}.500+00:00", job=f"j{i}"))
    dates = {"a" * 40: 1, "b" * 40: 2, "c" * 40: 3}
    files = render_trends(recs, tmp_path, dates.get)
    png = tmp_path / "trend-small-hot.png"
    assert png in files and (tmp_path / "trend-small-hot.svg") in files
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 20_000 < len(data) < 2_000_000
    (tmp_path / "x.svg").write_text("<svg/>")
    index = write_report(recs, tmp_path, dates.get)
    html = index.read_text()
    assert "stages-latest.png" in html and "trend-small-hot.png" in html
    assert "x.svg" in html
    assert (tmp_path / "stages-latest.png").stat().st_size > 10_000
    json.dumps(recs)


def test_layered_spans_become_per_layer_rows_and_a_run_line():
    from perf.runner import layer_times

    doc = {"spans": [
        {"name": "layer", "wall_s": 0.04, "bytes_out": 100, "attrs": {"layer": 0}},
        {"name": "compress", "wall_s": 0.01, "bytes_out": 30, "attrs": {"layer": 0}},
        {"name": "layer", "wall_s": 0.02, "bytes_out": 50, "attrs": {"layer": 1}},
        {"name": "compress", "wall_s": 0.0, "bytes_out": 2_000_000, "attrs": {"layer": 1}},
        {"name": "fetch", "wall_s": 0.5, "bytes_out": 9, "attrs": {}}]}
    rows = records.layers_from_spans(doc)
    assert rows == [{"layer": 0, "layer_s": 0.04, "compress_s": 0.01, "tar_bytes": 100,
                     "blob_bytes": 30},
                    {"layer": 1, "layer_s": 0.02, "compress_s": 0.0, "tar_bytes": 50,
                     "blob_bytes": 2_000_000}]
    line = layer_times([{"layers": rows}])
    assert line is not None and "0 0.040+0.010 s" in line and "1 0.020+0.000 s 2.0 MB" in line
    assert records.layers_from_spans({"spans": doc["spans"][4:]}) == []
    assert layer_times([{"layers": []}]) is None
