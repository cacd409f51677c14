"""The HTML report's drill-down: trend points link to a page per commit, every link and image
of every page resolves to a file, the gate's failures are marked on the chart and the page,
a commit's flamegraphs and a diff against the previous profiled point are there, and the
micro-benchmarks and the machine are shown."""

from __future__ import annotations

import json
import re
from pathlib import Path

from perf import bench, drilldown, records
from perf.report import write_report
from tests.helpers import broken_links, make_rec

A, B, C = "a" * 40, "b" * 40, "c" * 40


def _folded(path: Path, busy: int) -> None:
    path.write_text(f"main;build;compress {busy}\nmain;build;fetch 10\n")


def _report(tmp_path: Path) -> tuple[Path, Path]:
    results, out = tmp_path / "results", tmp_path / "flamegraphs"
    for i, commit in enumerate([A, B, C]):
        for r in range(2):
            records.save_record(results, make_rec(
                "reference", r, scale=1 + 0.2 * i, commit=commit, job=f"job-{i}",
                started=f"2026-01-0{i + 1}T00:00:0{r}.000+00:00"))
    recs = records.load_records(results)
    out.mkdir()
    _folded(out / f"small-hot-reference-{A[:10]}.folded", 100)
    _folded(out / f"small-hot-reference-{C[:10]}.folded", 180)
    (out / f"small-hot-reference-{C[:10]}.svg").write_text("<svg/>")
    gate_runs = [{"commit": C, "dirty": False, "base": B, "why": "the code before HEAD's last "
                  "code change", "impl": "reference", "workload": "small", "metric": "wall",
                  "at": "2026-01-03T00:00:00Z", "scenarios": ["hot"],
                  "failures": [{"scenario": "hot", "stage": "compress", "ratio": 1.21,
                                "threshold_pct": 40.0}]},
                 {"commit": B, "dirty": False, "base": A, "why": "the merge-base with main",
                  "impl": "reference", "workload": "small", "metric": "instructions",
                  "at": "2026-01-02T00:00:00Z", "scenarios": ["hot"], "failures": []}]
    bdir = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    bdir.mkdir(parents=True)
    for n, (commit, median) in enumerate([(B, 0.010), (C, 0.012)], start=1):
        (bdir / f"000{n}_{commit}.json").write_text(json.dumps({
            "datetime": f"2026-01-0{n + 1}T00:00:00", "commit_info": {"id": commit,
                                                                     "dirty": False},
            "benchmarks": [{"name": "test_stitch_tzdata", "stats": {
                "median": median, "iqr": 0.001, "min": median * 0.9, "rounds": 50}}]}))
    dates = {A: 1, B: 2, C: 3}
    index = write_report(recs, out, dates.get, gate_runs=gate_runs,
                         bench_runs=bench.load_runs(tmp_path), subject=lambda c: f"commit {c[0]}",
                         world_docs=[])
    return index, out


def test_trend_points_open_a_page_per_commit_and_every_link_resolves(tmp_path):
    index, out = _report(tmp_path)
    pages = sorted((out / drilldown.PAGES).glob("*.html"))
    assert [p.stem for p in pages] == [A[:12], B[:12], C[:12]]
    html = index.read_text()
    for commit in (A, B, C):  # inline SVG: the points and the commit labels are links
        assert html.count(f'xlink:href="commits/{commit[:12]}.html"') >= 2
    assert broken_links(index) == []
    for page in pages:
        assert broken_links(page) == [], page.name
    c_page = (out / drilldown.href((C, False))).read_text()
    for rec in records.load_records(tmp_path / "results", commit=C):
        rel = Path(rec["_path"]).relative_to(tmp_path)
        assert f"../../{rel}" in c_page  # each record of the commit, linked


def test_gate_failures_are_marked_on_the_chart_and_the_page(tmp_path):
    index, out = _report(tmp_path)
    svg = (out / "trend-small-hot.svg").read_text()
    assert "gate: compress +21.0% (wall, vs bbbbbbbb)" in svg
    c_page = (out / drilldown.href((C, False))).read_text()
    assert "failed: hot/compress +21.0% (threshold 40%)" in c_page
    assert f"href='{B[:12]}.html'" in c_page  # the base it failed against, one click away
    b_page = (out / drilldown.href((B, False))).read_text()
    assert "passed" in b_page and "instructions" in b_page
    assert "The gate did not run at this point." in (out / drilldown.href((A, False))).read_text()


def test_a_commit_page_has_its_flamegraphs_and_a_diff_against_the_previous_profile(tmp_path):
    _, out = _report(tmp_path)
    c_page = (out / drilldown.href((C, False))).read_text()
    assert f"small-hot-reference-{C[:10]}.svg" in c_page
    diff = out / drilldown.PAGES / f"{C[:12]}-small-hot-reference-vs-{A[:12]}-diff.svg"
    assert diff.exists() and f"href='{diff.name}'" in c_page
    assert "red = grew" in diff.read_text()
    a_page = (out / drilldown.href((A, False))).read_text()
    assert "no earlier point was profiled the same way" in a_page
    b_page = (out / drilldown.href((B, False))).read_text()
    assert "apkperf flame --tree bbbbbbbbbbbb" in b_page


def test_benchmarks_and_the_machine_are_shown(tmp_path):
    index, out = _report(tmp_path)
    html = index.read_text()
    assert "test_stitch_tzdata" in html and "x1.20" in html  # latest against the previous
    cpu = records.load_records(tmp_path / "results")[0]["machine"].get("cpu_model")
    assert cpu and str(cpu) in html
    c_page = (out / drilldown.href((C, False))).read_text()
    assert "test_stitch_tzdata" in c_page and re.search(r"12\.00", c_page)
    assert "None made at this point." in (out / drilldown.href((A, False))).read_text()
