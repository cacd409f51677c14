"""`flamegraphs/index.html`: the latest job's table, stacked stage bars, the micro-benchmarks,
trend charts whose points open a page per commit (perf/drilldown.py), the machine, the
sections of peers, frontier, start-up and the world (its own page, world.html:
perf/worldreport.py), and links to every profile in the directory. Static, no JavaScript; the
trend charts are inline SVG so their points are links."""

from __future__ import annotations

from html import escape
from pathlib import Path

from perf import bench, drilldown, stats, worldreport
from perf.frontier import section_html as frontier_html
from perf.peers import peers_html
from perf.records import metric
from perf.runner import stage_names
from perf.startup import report_section as startup_html
from perf.trend import order_points, render_stage_bars, render_trends


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
        if p.name.startswith(("trend-", "stages-", "index", "frontier-")) or p.is_dir():
            continue
        if p.name.endswith(PROFILE_SUFFIXES):
            files.append(p)
    return files


def inline_svg(path: Path) -> str:
    """An SVG file's <svg> element, to put in the page (links inside it then work)."""
    text = path.read_text()
    return text[text.index("<svg"):]


def write_report(records: list[dict], out_dir: Path, commit_date=lambda _c: 0, *,
                 gate_runs: list[dict] | None = None, bench_runs: list[dict] | None = None,
                 subject=lambda _c: "", world_docs: list[dict] | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    gate_runs = gate_runs or []
    if world_docs is None:  # apkperf world: this repository's records, this machine's
        world_docs = worldreport.default_docs()
    points = order_points(records, commit_date)
    pages = drilldown.write_pages(records, out_dir, points, gate_runs=gate_runs,
                                  bench_runs=bench_runs or [], subject=subject,
                                  world=worldreport.commit_links(world_docs))
    world_page = worldreport.write_page(world_docs, out_dir, commit_date, has_page=set(points),
                                        subject=subject)
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
    parts.append(bench.section_html(bench_runs or []))  # make bench, beside the stages
    trends = [p for p in render_trends(records, out_dir, commit_date, links=drilldown.href,
                                       gate_runs=gate_runs) if p.suffix == ".svg"]
    if trends:
        parts.append("<h2>Trends over commits</h2><p>Click a point or a commit for its page: "
                     "runs and records, gate results, flamegraphs and the diff against the "
                     "previous profiled point, benchmarks, machine. A red X is a commit the "
                     "gate failed.</p>")
        for p in trends:
            parts.append(f"<figure>{inline_svg(p)}<figcaption><a href='{p.name}'>SVG</a> · "
                         f"<a href='{p.with_suffix('.png').name}'>PNG</a></figcaption>"
                         "</figure>")
    if pages:
        parts.append("<h2>Commits</h2><ul>" + "".join(
            f"<li><a href='{escape(drilldown.href(pt))}'>{escape(pt[0][:12])}"
            f"{' (dirty)' if pt[1] else ''}</a> {escape(subject(pt[0]))}</li>"
            for pt in reversed(points)) + "</ul>")
    if latest:
        parts.append("<h2>Machine</h2>" + drilldown.machines_html(latest))
    parts.append(peers_html(out_dir))  # apkperf peers: the latest stored results
    parts.append(frontier_html(out_dir))  # apkperf frontier: the latest stored results
    parts.append(startup_html())  # apkperf startup: the latest stored result
    parts.append(worldreport.summary_html(world_docs, world_page))  # and a link to world.html
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
