"""The report's drill-down: one page per trend point (a commit, or a dirty tree on it) under
`commits/`, which the trend charts' points link to. A page shows that commit's runs per
workload/scenario/impl with links to every run record, the machines they ran on, what the
gate found there, the commit's flamegraphs, the micro-benchmarks made at it, a differential
flamegraph against the previous point that was profiled the same way, and a link to the world
page (perf/worldreport.py) when the commit has a world record."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from html import escape
from pathlib import Path

from perf import bench, flame, stats
from perf.records import metric
from perf.runner import stage_names
from perf.trend import label, point_key

Point = tuple[str, bool]
PAGES = "commits"
STYLE = ("<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
         "table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid "
         "#ccc;padding:3px 7px;text-align:left}th{background:#eee}.fail{color:#d62728}"
         "</style>")


def slug(point: Point) -> str:
    return point[0][:12] + ("-dirty" if point[1] else "")


def href(point: Point) -> str:
    """The page of a point, relative to the report's directory."""
    return f"{PAGES}/{slug(point)}.html"


def _rel(target: str | Path, page_dir: Path) -> str:
    return os.path.relpath(Path(target).resolve(), page_dir.resolve())


def _profile_tag(point: Point) -> str:
    """How `apkperf flame` names a profile of this point: `<what>-<sha10>[-dirty].<ext>`."""
    return f"-{point[0][:10]}{'-dirty' if point[1] else ''}"


def profiles_of(out_dir: Path, point: Point) -> dict[str, list[Path]]:
    """{what: [files]} for the flame profiles of this point (`what` = workload-scenario-impl);
    diffs made by `apkperf flame --diff` are listed under "diff"."""
    tag = _profile_tag(point)
    found: dict[str, list[Path]] = {}
    for p in sorted(out_dir.glob(f"*{tag}.*")):
        stem = p.name.split(tag + ".", 1)[0]
        if "-vs-" in stem:
            found.setdefault("diff", []).append(p)
        elif p.name.split(tag + ".", 1)[-1] in ("svg", "folded", "speedscope.json",
                                                 "pyinstrument.html"):
            found.setdefault(stem, []).append(p)
    for p in sorted(out_dir.glob(f"*-vs-{point[0][:10]}{'-dirty' if point[1] else ''}-diff*.svg")):
        found.setdefault("diff", []).append(p)
    return found


def _runs_table(recs: list[dict], page_dir: Path) -> str:
    stages = stage_names(recs)
    head = ["workload", "scenario", "impl", "n", "total", *stages, "cpu", "peak RSS", "records"]
    rows = []
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        groups.setdefault((r["workload"], r["scenario"], r["impl"], r.get("counter")),
                          []).append(r)
    for (workload, scenario, impl, counter), rs in groups.items():
        field, unit, scale = ("instructions", "M instr", 1e6) if counter else ("wall_s", "s", 1)
        cells = [escape(workload), escape(scenario) + (f" ({escape(counter)})" if counter else ""),
                 escape(impl), str(len(rs))]
        for st in ["total", *stages]:
            vals = [v for r in rs if (v := metric(r, st, field)) is not None]
            cells.append(f"{stats.median(vals) / scale:.3f} {unit}" if vals else "–")
        cells.append(f"{stats.median([r['cpu_s'] for r in rs]):.2f} s")
        cells.append(f"{stats.median([r['peak_rss_mb'] for r in rs]):.0f} MB")
        cells.append(" ".join(f"<a href='{escape(_rel(r['_path'], page_dir))}'>"
                              f"{escape(r['job'][-6:])}/{r['round']}</a>"
                              for r in rs if "_path" in r))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
            + "".join(rows) + "</table>")


def machines_html(recs: list[dict]) -> str:
    """Each machine the records ran on: its id and every fingerprint field."""
    seen: dict[str, dict] = {}
    for r in recs:
        seen.setdefault(r["machine_id"], r["machine"])
    parts = []
    for mid, info in seen.items():
        rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>"
                       for k, v in sorted(info.items()))
        parts.append(f"<h3>machine {escape(mid)}</h3><table>{rows}</table>")
    return "".join(parts)


def _gate_html(runs: list[dict], point: Point, known: set[Point]) -> str:
    mine = [g for g in runs if (g["commit"], bool(g.get("dirty"))) == point]
    if not mine:
        return "<p>The gate did not run at this point.</p>"
    rows = []
    for g in mine:
        base: Point = (str(g.get("base")), False)
        base_cell = (f"<a href='{escape(slug(base))}.html'>{escape(base[0][:12])}</a>"
                     if base in known else escape(base[0][:12]))
        found = g.get("failures") or []
        result = ("<span class='fail'>failed: " + "; ".join(
            f"{escape(f['scenario'])}/{escape(f['stage'])} {100 * (f['ratio'] - 1):+.1f}% "
            f"(threshold {f['threshold_pct']:g}%)" for f in found) + "</span>"
                  if found else "passed")
        rows.append(f"<tr><td>{escape(str(g.get('at')))}</td><td>{escape(str(g.get('metric')))}"
                    f"</td><td>{escape(str(g.get('impl')))}</td><td>{base_cell} "
                    f"({escape(str(g.get('why')))})</td><td>{result}</td></tr>")
    return ("<table><tr><th>at</th><th>metric</th><th>impl</th><th>base</th><th>result</th>"
            "</tr>" + "".join(rows) + "</table>")


def _diff_against_previous(out_dir: Path, page_dir: Path, point: Point, earlier: list[Point],
                           what: str, files: list[Path]) -> str:
    """A differential flamegraph of `what` against the latest earlier point profiled the
    same way (rendered once, beside the page)."""
    folded = next((p for p in files if p.suffix == ".folded"), None)
    if folded is None:
        return ""
    for prev in reversed(earlier):
        prev_folded = out_dir / f"{what}{_profile_tag(prev)}.folded"
        if not prev_folded.exists():
            continue
        prefix = page_dir / f"{slug(point)}-{what}-vs-{slug(prev)}"
        fwd = prefix.with_name(prefix.name + "-diff.svg")
        if not fwd.exists() or fwd.stat().st_mtime < max(folded.stat().st_mtime,
                                                         prev_folded.stat().st_mtime):
            flame.render_diff_pair(flame.read_folded(prev_folded), flame.read_folded(folded),
                                   prefix, base_label=label(prev), head_label=label(point))
        rev = prefix.with_name(prefix.name + "-diff-reverse.svg")
        return (f" — against {escape(label(prev))} (the previous point profiled so): "
                f"<a href='{escape(fwd.name)}'>diff</a>, "
                f"<a href='{escape(rev.name)}'>reverse diff</a>")
    return " — no earlier point was profiled the same way, so no diff"


def write_pages(records: list[dict], out_dir: Path, points: list[Point], *,
                gate_runs: list[dict], bench_runs: list[dict],
                subject: Callable[[str], str] = lambda _c: "",
                world: Mapping[Point, tuple[str, str]] | None = None) -> list[Path]:
    """A page per point (in trend order, oldest first); returns the pages written. `world`:
    per point with a world record, its place on the world page (relative to the report's
    directory) and a line about it."""
    page_dir = out_dir / PAGES
    page_dir.mkdir(parents=True, exist_ok=True)
    known = set(points)
    written = []
    for i, point in enumerate(points):
        recs = [r for r in records if point_key(r) == point]
        nav = []
        if i:
            nav.append(f"<a href='{escape(slug(points[i - 1]))}.html'>← "
                       f"{escape(label(points[i - 1]))}</a>")
        nav.append("<a href='../index.html'>report</a>")
        if i + 1 < len(points):
            nav.append(f"<a href='{escape(slug(points[i + 1]))}.html'>"
                       f"{escape(label(points[i + 1]))} →</a>")
        parts = ["<!doctype html><html><head><meta charset='utf-8'>",
                 f"<title>apkperf {escape(label(point))}</title>{STYLE}</head><body>",
                 f"<p>{' | '.join(nav)}</p>",
                 f"<h1>{escape(point[0])}{' (dirty tree)' if point[1] else ''}</h1>",
                 f"<p>{escape(subject(point[0]))}</p>",
                 "<h2>Runs</h2><p>Medians per stage; each record links to its JSON.</p>",
                 _runs_table(recs, page_dir),
                 "<h2>Gate</h2>", _gate_html(gate_runs, point, known),
                 "<h2>Flamegraphs</h2>"]
        profiles = profiles_of(out_dir, point)
        if not profiles:
            parts.append("<p>None at this point: <code>apkperf flame --tree "
                         f"{escape(point[0][:12])}</code> makes one.</p>")
        items = []
        for what, files in profiles.items():
            links = ", ".join(f"<a href='{escape(_rel(p, page_dir))}'>{escape(p.name)}</a>"
                              for p in files)
            extra = ("" if what == "diff" else
                     _diff_against_previous(out_dir, page_dir, point, points[:i], what, files))
            items.append(f"<li>{escape(what)}: {links}{extra}</li>")
        if items:
            parts.append("<ul>" + "".join(items) + "</ul>")
        runs = [b for b in bench_runs if (b["commit"], b["dirty"]) == point]
        parts.append("<h2>Micro-benchmarks</h2>")
        if runs:
            earlier = [b for b in bench_runs if b["datetime"] < runs[-1]["datetime"]
                       and b["commit"] != point[0]]
            parts.append(bench.table_html(runs[-1], earlier[-1] if earlier else None))
        else:
            parts.append("<p>None made at this point.</p>")
        parts.append("<h2>Build the world</h2>")
        if world and point in world:
            where, line = world[point]
            parts.append(f"<p><a href='../{escape(where)}'>World records at this commit</a>: "
                         f"{escape(line)}</p>")
        else:
            parts.append("<p>No world record at this point.</p>")
        parts.append("<h2>Machines</h2>" + machines_html(recs) + "</body></html>")
        page = page_dir / f"{slug(point)}.html"
        page.write_text("\n".join(parts) + "\n")
        written.append(page)
    return written
