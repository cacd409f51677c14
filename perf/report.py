"""`flamegraphs/index.html`: the latest job's table, stacked stage bars, trend charts and
links to every profile in the directory. Static, no JavaScript; images are files beside it."""

from __future__ import annotations

from html import escape
from pathlib import Path

from perf import stats
from perf.frontier import section_html as frontier_html
from perf.peers import peers_html
from perf.records import metric
from perf.runner import stage_names
from perf.startup import report_section as startup_html
from perf.trend import render_stage_bars, render_trends


def latest_job(records: list[dict]) -> list[dict]:
    if not records:
        return []
    newest = max(records, key=lambda r: r["started_at"])
    return [r for r in records if r["job"] == newest["job"]]


def table_html(records: list[dict]) -> str:
    stages = stage_names(records)
    head = "".join(f"<th>{escape(s)}</th>" for s in ["scenario", "side / impl", "n", "total",
                                                      *stages, "cpu", "peak RSS"])
    rows = []
    for scen in dict.fromkeys(r["scenario"] for r in records):
        for side in dict.fromkeys(r["side"] for r in records if r["scenario"] == scen):
            rs = [r for r in records if r["scenario"] == scen and r["side"] == side]
            cells = [escape(scen), escape(side), str(len(rs))]
            for st in ["total", *stages]:
                vals = [v for r in rs if (v := metric(r, st)) is not None]
                cells.append(f"{stats.median(vals):.3f} s<br><small>±{stats.mad(vals):.3f}"
                             "</small>" if vals else "–")
            cells.append(f"{stats.median([r['cpu_s'] for r in rs]):.2f} s")
            cells.append(f"{stats.median([r['peak_rss_mb'] for r in rs]):.0f} MB")
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


PROFILE_SUFFIXES = (".svg", ".speedscope.json", ".pyinstrument.html", ".folded")


def profile_links(out_dir: Path) -> list[Path]:
    files = []
    for p in sorted(out_dir.iterdir()):
        if p.name.startswith(("trend-", "stages-", "index", "frontier-")):
            continue
        if p.name.endswith(PROFILE_SUFFIXES):
            files.append(p)
    return files


def write_report(records: list[dict], out_dir: Path, commit_date=lambda _c: 0) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>apkperf report</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
             "padding:3px 7px;text-align:right}td:nth-child(-n+2){text-align:left}"
             "th{background:#eee}img{max-width:100%;border:1px solid #ddd;margin:6px 0}"
             "</style></head><body><h1>apkperf report</h1>"]
    latest = latest_job(records)
    if latest:
        r0 = latest[0]
        parts.append(f"<h2>Latest run</h2><p>job {escape(r0['job'])}, workload "
                     f"<b>{escape(r0['workload'])}</b>, commit {escape(r0['commit'][:12])}"
                     f"{' (dirty)' if r0['dirty'] else ''}, machine "
                     f"{escape(r0['machine_id'])} ({escape(str(r0['machine'].get('cpu_model')))}"
                     f", {r0['machine'].get('cores')} cores), started {escape(r0['started_at'])}."
                     " Median wall time ± MAD per stage.</p>")
        parts.append(table_html(latest))
        bars = render_stage_bars(latest, out_dir / "stages-latest.png",
                                 f"Where the time goes: {r0['workload']}, "
                                 f"{r0['commit'][:10]}")
        parts.append(f"<h2>Stages</h2><img src='{bars.name}' alt='stacked stage times'>")
    else:
        parts.append("<p>No run records yet: run <code>apkperf run</code>.</p>")
    trends = [p for p in render_trends(records, out_dir, commit_date) if p.suffix == ".png"]
    if trends:
        parts.append("<h2>Trends over commits</h2>")
        for p in trends:
            parts.append(f"<p><a href='{p.with_suffix('.svg').name}'><img src='{p.name}' "
                         f"alt='{escape(p.stem)}'></a></p>")
    parts.append(peers_html(out_dir))  # apkperf peers: the latest stored results
    parts.append(frontier_html(out_dir))  # apkperf frontier: the latest stored results
    parts.append(startup_html())  # apkperf startup: the latest stored result
    links = profile_links(out_dir)
    parts.append("<h2>Profiles</h2>")
    if links:
        parts.append("<ul>" + "".join(f"<li><a href='{escape(p.name)}'>{escape(p.name)}</a></li>"
                                      for p in links) + "</ul>")
        parts.append("<p>.speedscope.json files open in speedscope; .folded files are the raw "
                     "material (py-spy samples, normalised).</p>")
    else:
        parts.append("<p>None yet: run <code>apkperf flame</code>.</p>")
    parts.append("</body></html>")
    index = out_dir / "index.html"
    index.write_text("\n".join(parts) + "\n")
    return index
