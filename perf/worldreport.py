"""The report's world page, `world.html`, and its short summary on index.html, from the stored
world records (`apkperf world`, perf/worldrun.py).

For the latest record: the totals per scenario and variant and the CPU ratios between the
variants; per scenario an inline SVG of CPU per image per variant (each bar's tooltip says
what the image reused); per image its wall, CPU, layers taken from the layer cache and made,
bytes hashed and deflated, and where its CPU went by stage; what world-bump rebuilt (which
images, which of their layers, and who else took those layers from the cache). Then, over the
stored records of every commit, CPU per image per variant and scenario (inline SVG; a point
links to its commit's page, commits/<sha>.html, when the report has one) and the records by
commit. Static, no JavaScript, no external assets."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection
from html import escape
from pathlib import Path
from typing import Any

from perf import drilldown, stats
from perf.trend import label, order_points
from perf.worldrun import breakdown_line, bump_line, image_breakdown, load, ratios, rows

PAGE = "world.html"
Point = tuple[str, bool]
Doc = dict[str, Any]

STYLE = ("<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
         "table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid "
         "#ccc;padding:3px 7px;text-align:right}td.l,th.l{text-align:left}th{background:#eee}"
         ".fail{color:#d62728}figure{margin:8px 0}</style>")
COLOURS = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb")


def default_docs() -> list[Doc]:
    """This repository's world records from this machine, oldest first ([] outside a git
    work tree)."""
    from perf.gitrefs import GitError, repo_root
    from perf.machine import machine_id

    try:
        return load(repo_root(), machine_id())
    except GitError:
        return []


def point_of(doc: Doc) -> Point:
    return str(doc["commit"]), bool(doc.get("dirty"))


def anchor(point: Point) -> str:
    """The id of a commit's row in the page's "Records by commit" table."""
    return "c-" + drilldown.slug(point)


def href(point: Point) -> str:
    """Where a commit's world records are, relative to the report's directory."""
    return f"{PAGE}#{anchor(point)}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _size(n: float) -> str:
    return _mb(n) if n >= 1e6 else f"{n / 1e3:,.1f} kB"


def _table(head: list[str], body: list[list[str]], left: int = 2) -> str:
    """A table whose first `left` columns are text (left-aligned), the rest numbers."""
    def cell(tag: str, j: int, c: str) -> str:
        return f"<{tag} class='l'>{c}</{tag}>" if j < left else f"<{tag}>{c}</{tag}>"

    return ("<table><tr>" + "".join(cell("th", j, escape(h)) for j, h in enumerate(head))
            + "</tr>" + "".join("<tr>" + "".join(cell("td", j, c) for j, c in enumerate(r))
                                + "</tr>" for r in body) + "</table>")


def _first_runs(doc: Doc, scenario: str) -> list[dict[str, Any]]:
    return [r for r in doc["runs"] if r["scenario"] == scenario and r["round"] == 0]


def _scenarios(doc: Doc) -> list[str]:
    return list(dict.fromkeys(r["scenario"] for r in doc["runs"]))


# ----------------------------------------------------------------------------- the latest


def totals_html(doc: Doc) -> str:
    """Per scenario and variant, medians over the rounds."""
    head = ["scenario", "variant", "rounds", "wall", "CPU", "CPU / image",
            "in-build CPU / image", "hashed", "deflated", "layers from cache / made",
            "images rebuilt", "peak RSS"]
    body = [[escape(r["scenario"]), escape(r["variant"]), str(r["n"]), f"{r['wall_s']:.2f} s",
             f"{r['cpu_s']:.2f} s", _ms(r["cpu_per_image_s"]), _ms(r["image_cpu_per_image_s"]),
             _mb(r["bytes_hashed"]), _mb(r["bytes_compressed"]),
             f"{int(r['layer_cache_hits'])} / {int(r['layers_made'])}",
             f"{int(r['images_rebuilt'])} / {r['images']}", f"{r['peak_rss_mb']:.0f} MB"]
            for r in rows(doc)]
    return _table(head, body)


def ratio_lines(doc: Doc) -> list[str]:
    return [line for scen in _scenarios(doc) for line in ratios(doc, scen)]


def chart_svg(doc: Doc, scenario: str = "world") -> str:
    """Inline SVG: per image, a bar per variant of its in-build CPU (log scale, ms), the
    bar's tooltip saying what it reused (round 0)."""
    runs = _first_runs(doc, scenario)
    if not runs:
        return ""
    names = list(dict.fromkeys(i["name"] for r in runs for i in r["per_image"]))
    per = {r["variant"]: {i["name"]: i for i in r["per_image"]} for r in runs}
    bar, gap, left, width = 5, 5, 150, 560
    row_h = bar * len(runs) + gap
    vals = [max(1e-4, float(i["cpu_s"])) * 1000 for r in runs for i in r["per_image"]]
    lo, hi = _log_range(vals)
    span = math.log10(hi) - math.log10(lo)

    def x(ms: float) -> float:
        return left + width * (math.log10(max(ms, lo)) - math.log10(lo)) / span

    top = 20 + 16 * len(runs)
    height = top + row_h * len(names) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" '
             f'height="{height}" font-family="sans-serif" font-size="11" role="img">'
             f'<title>{escape(scenario)}: in-build CPU per image, per variant</title>']
    for k, r in enumerate(runs):
        c = COLOURS[k % len(COLOURS)]
        parts.append(f'<rect x="{left}" y="{6 + 16 * k}" width="10" height="10" fill="{c}"/>'
                     f'<text x="{left + 14}" y="{15 + 16 * k}">{escape(r["variant"])}</text>')
    for tick in _decades(lo, hi):
        tx = x(tick)
        parts.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" '
                     f'y2="{height - 20}" stroke="#ddd"/><text x="{tx:.1f}" y="{height - 6}" '
                     f'text-anchor="middle">{tick:g} ms</text>')
    for j, name in enumerate(names):
        y0 = top + row_h * j
        parts.append(f'<text x="{left - 6}" y="{y0 + row_h / 2 + 3:.1f}" '
                     f'text-anchor="end">{escape(name)}</text>')
        for k, r in enumerate(runs):
            img = per[r["variant"]].get(name)
            if img is None:
                continue
            ms = float(img["cpu_s"]) * 1000
            parts.append(f'<rect x="{left}" y="{y0 + bar * k}" width="{x(ms) - left:.1f}" '
                         f'height="{bar - 1}" fill="{COLOURS[k % len(COLOURS)]}">'
                         f'<title>{escape(bar_tip(img, r["variant"]))}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def bar_tip(img: dict[str, Any], variant: str) -> str:
    """What one image of one variant cost and reused, for its bar's tooltip."""
    return (f"{img['name']} {variant}: {float(img['cpu_s']) * 1000:.0f} ms CPU, "
            f"{float(img['wall_s']) * 1000:.0f} ms wall; layers {img['layers']}: "
            f"{img['layer_cache_hits']} from the layer cache, {img['layers_made']} made; "
            f"{img['bytes_hashed'] / 1e6:.1f} MB hashed, "
            f"{img['bytes_compressed'] / 1e6:.1f} MB deflated")


def _log_range(vals: list[float]) -> tuple[float, float]:
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    return lo, (hi if hi > lo else lo * 10)


def _decades(lo: float, hi: float) -> list[float]:
    out, tick = [], lo
    while tick <= hi * 1.0001:
        out.append(tick)
        tick *= 10
    return out


def images_html(doc: Doc, scenario: str) -> str:
    """Per image and variant (round 0): wall, CPU, layers from the cache / made, bytes hashed
    and deflated, and its CPU by stage (ms)."""
    runs = _first_runs(doc, scenario)
    if not runs:
        return ""
    split = {r["variant"]: {i["name"]: image_breakdown(i) for i in r["per_image"]}
             for r in runs}
    totals: dict[str, float] = {}
    for per in split.values():
        for parts in per.values():
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v
    stages = [k for k, v in sorted(totals.items(), key=lambda kv: -kv[1])
              if v > 0 and k != "outside spans"] + ["outside spans"]
    head = ["image", "variant", "wall", "CPU", "layers from cache / made", "hashed",
            "deflated", *stages]
    names = list(dict.fromkeys(i["name"] for r in runs for i in r["per_image"]))
    body = []
    for name in names:
        for r in runs:
            img = next((i for i in r["per_image"] if i["name"] == name), None)
            if img is None:
                continue
            parts = split[r["variant"]][name]
            body.append([escape(name), escape(r["variant"]), _ms(float(img["wall_s"])),
                         _ms(float(img["cpu_s"])),
                         f"{img['layer_cache_hits']} / {img['layers_made']}",
                         _mb(img["bytes_hashed"]), _mb(img["bytes_compressed"]),
                         *(f"{parts.get(k, 0.0) * 1000:,.1f}" for k in stages)])
    return ("<p>In-build CPU by stage in ms: <i>layer cache hits</i> is taking layers from "
            "the cache (key, lookup, blob), <i>layers made</i> writing, hashing and "
            "compressing the others.</p>" + _table(head, body))


def image_layers(img: dict[str, Any]) -> list[dict[str, Any]]:
    """One image's layers from its spans, bottom first: per (arch, layer index) whether it
    came from the layer cache or was made, its cache key, entries, tar bytes, bytes hashed
    and deflated; the top one (the image's own files and the apk database) marked."""
    spans = [sp for sp in (img.get("spans") or {}).get("spans") or []
             if sp.get("name") in ("layer", "compress")]
    found: dict[tuple[str, int | None], dict[str, Any]] = {}
    for sp in spans:
        attrs = sp.get("attrs") or {}
        where = (str(sp.get("arch", "")), attrs.get("layer"))
        lay = found.setdefault(where, {"arch": where[0], "index": where[1], "key": "",
                                       "hit": False, "made": False, "entries": 0,
                                       "tar_bytes": 0, "hashed": 0, "deflated": 0})
        out = attrs.get("output")
        if sp["name"] == "layer":
            if out == "cache":
                lay["key"] = str(attrs.get("layer_key", ""))
                if attrs.get("layer_cache") == "hit":
                    lay.update(hit=True, entries=int(attrs.get("entries", 0)),
                               tar_bytes=int(attrs.get("reused_tar_bytes", 0)))
            else:
                lay.update(made=True, entries=int(attrs.get("entries", 0)),
                           tar_bytes=int(sp.get("bytes_out", 0)))
                lay["hashed"] += int(sp.get("bytes_out", 0))
        elif out != "cache":
            lay["hashed"] += int(sp.get("bytes_out", 0))
            lay["deflated"] += int(attrs.get("recompressed_in", 0) if out == "blob"
                                   else sp.get("bytes_in", 0))
    layers = list(found.values())
    for arch in {lay["arch"] for lay in layers}:
        indexed = [lay["index"] for lay in layers if lay["arch"] == arch
                   and lay["index"] is not None]
        for lay in layers:
            if lay["arch"] == arch:
                lay["top"] = lay["index"] is None or lay["index"] == max(indexed)
    return layers


def _layer_name(lay: dict[str, Any]) -> str:
    arch = f" ({lay['arch']})" if lay["arch"] else ""
    if lay["index"] is None:
        return "the one layer" + arch
    what = "top layer (own files, apk database)" if lay["top"] else "package layer"
    return f"layer {lay['index']}, {what}{arch}"


def bump_html(doc: Doc) -> str:
    """What world-bump rebuilt, per variant (round 0): the images that made anything and
    which of their layers, who else took each made layer from the layer cache, whether the
    image's digest changed, and the images that made nothing."""
    runs = _first_runs(doc, "world-bump")
    if not runs or not doc.get("bump"):
        return ""
    b = doc["bump"]
    parts = [f"<p>The repository swapped for one in which <b>{escape(b['package'])}</b> is "
             f"{escape(b['version'])} (new content, same path); the world built again on "
             "the same cache.</p>"]
    by_variant = {r["variant"]: r for r in rows(doc) if r["scenario"] == "world-bump"}
    for run in runs:
        parts.append(f"<h3>{escape(run['variant'])}</h3>"
                     f"<p>{escape(bump_line(doc, by_variant[run['variant']]))}.</p>")
        before = {i["name"]: i["digest"] for r in _first_runs(doc, "world")
                  if r["variant"] == run["variant"] for i in r["per_image"]}
        layers = {i["name"]: image_layers(i) for i in run["per_image"]}
        if not run.get("layer_cache"):
            parts.append(f"<p>No layer cache: every image made all its layers again "
                         f"({run['layers_made']} layers, {_mb(run['bytes_hashed'])} hashed, "
                         f"{_mb(run['bytes_compressed'])} deflated).</p>")
            continue
        takers: dict[str, list[str]] = {}
        for name, lays in layers.items():
            for lay in lays:
                if lay["hit"] and lay["key"]:
                    takers.setdefault(lay["key"], []).append(name)
        body = []
        rebuilt = [i for i in run["per_image"] if i["rebuilt"]]
        for img in rebuilt:
            made = []
            for lay in layers[img["name"]]:
                if not lay["made"]:
                    continue
                also = takers.get(lay["key"], [])
                made.append(f"{escape(_layer_name(lay))}: {lay['entries']:,} entries, "
                            f"{_size(lay['tar_bytes'])} tar, {_size(lay['hashed'])} hashed"
                            + (f", key {escape(lay['key'][:12])}" if lay["key"] else "")
                            + (f"; then from the cache in {escape(', '.join(also))}"
                               if also else ""))
            changed = ("–" if img["name"] not in before else
                       "changed" if before[img["name"]] != img["digest"] else "same")
            body.append([escape(img["name"]), "<br>".join(made) or "–",
                         str(img["layer_cache_hits"]), _mb(img["bytes_hashed"]),
                         _mb(img["bytes_compressed"]), _ms(float(img["cpu_s"])), changed])
        if body:
            parts.append(_table(["image", "layers made", "layers from cache", "hashed",
                                 "deflated", "CPU", "digest vs world"], body))
        rest = [i["name"] for i in run["per_image"] if not i["rebuilt"]]
        if rest:
            others = "The other image" if len(rest) == 1 else f"The other {len(rest)} images"
            parts.append(f"<p>{others} made nothing (every layer from the layer cache): "
                         f"{escape(', '.join(rest))}.</p>")
    return "".join(parts)


# ----------------------------------------------------------------------------- over commits


def _key(doc: Doc) -> tuple[str, str, str]:
    return str(doc.get("machine_id", "")), str(doc["workload"]), str(doc.get("mode", "many"))


def trend_values(docs: list[Doc], points: list[Point], scenario: str,
                 variant: str) -> list[float | None]:
    """Per point, the median in-build CPU per image (s) of every round of `variant` in
    `scenario` over the point's records (None when none has it)."""
    out: list[float | None] = []
    for p in points:
        vals = [float(r["image_cpu_per_image_s"]) for d in docs if point_of(d) == p
                for r in d["runs"] if r["scenario"] == scenario and r["variant"] == variant]
        out.append(float(stats.median(vals)) if vals else None)
    return out


def trend_svg(docs: list[Doc], points: list[Point], scenario: str,
              has_page: Collection[Point]) -> str:
    """Inline SVG: in-build CPU per image (ms, log scale) per commit, a line per variant;
    each point and commit label links to the commit's page when there is one."""
    variants = list(dict.fromkeys(r["variant"] for d in docs for r in d["runs"]
                                  if r["scenario"] == scenario))
    series = {v: trend_values(docs, points, scenario, v) for v in variants}
    vals = [y * 1000 for ys in series.values() for y in ys if y is not None and y > 0]
    if not vals:
        return ""
    lo, hi = _log_range(vals)
    left, top, plot_w, plot_h, legend = 70, 16, max(240, 90 * len(points)), 220, 190
    step = plot_w / len(points)
    width, height = left + plot_w + legend, top + plot_h + 80

    def y(ms: float) -> float:
        return top + plot_h * (1 - (math.log10(max(ms, lo)) - math.log10(lo))
                               / (math.log10(hi) - math.log10(lo)))

    def x(i: int) -> float:
        return left + step * (i + 0.5)

    def linked(p: Point, inner: str) -> str:
        return (f'<a xlink:href="{escape(drilldown.href(p))}">{inner}</a>' if p in has_page
                else inner)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/'
             f'xlink" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11" role="img"><title>{escape(scenario)}: in-build CPU per image '
             f'by commit</title>']
    for tick in _decades(lo, hi):
        ty = y(tick)
        parts.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{left + plot_w}" y2="{ty:.1f}" '
                     f'stroke="#ddd"/><text x="{left - 6}" y="{ty + 4:.1f}" '
                     f'text-anchor="end">{tick:g} ms</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
                 f'y2="{top + plot_h}" stroke="#888"/>')
    for i, p in enumerate(points):
        lx, ly = x(i), top + plot_h + 14
        parts.append(linked(p, f'<text x="{lx:.1f}" y="{ly}" text-anchor="end" '
                               f'transform="rotate(-30 {lx:.1f} {ly})">'
                               f'{escape(label(p))}</text>'))
    for k, (variant, ys) in enumerate(series.items()):
        c = COLOURS[k % len(COLOURS)]
        pts = [(x(i), y(v * 1000)) for i, v in enumerate(ys) if v is not None]
        if len(pts) > 1:
            parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                         + " ".join(f"{px:.1f},{py:.1f}" for px, py in pts) + '"/>')
        for i, v in enumerate(ys):
            if v is None:
                continue
            tip = f"{label(points[i])} {variant}: {v * 1000:.0f} ms per image in-build"
            parts.append(linked(points[i], f'<circle cx="{x(i):.1f}" cy="{y(v * 1000):.1f}" '
                                           f'r="4" fill="{c}"><title>{escape(tip)}</title>'
                                           "</circle>"))
        ly = top + 6 + 16 * k
        parts.append(f'<rect x="{left + plot_w + 14}" y="{ly - 9}" width="10" height="10" '
                     f'fill="{c}"/><text x="{left + plot_w + 28}" y="{ly}">'
                     f'{escape(variant)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _rel(target: str, page_dir: Path) -> str:
    return os.path.relpath(Path(target).resolve(), page_dir.resolve())


def trend_html(docs: list[Doc], commit_date: Callable[[str], int],
               has_page: Collection[Point]) -> str:
    """Per machine, workload and mode (the latest record's first): a chart per scenario."""
    keys = list(dict.fromkeys(_key(d) for d in reversed(docs)))
    machines = {k[0] for k in keys}
    parts = []
    for key in keys:
        mine = [d for d in docs if _key(d) == key]
        points = order_points(mine, commit_date)
        where = f", machine {key[0]}" if len(machines) > 1 else ""
        parts.append(f"<h3>{escape(key[1])}, mode {escape(key[2])}{escape(where)}: "
                     f"{len(points)} commit{'s' if len(points) != 1 else ''}</h3>")
        for scen in dict.fromkeys(r["scenario"] for d in mine for r in d["runs"]):
            svg = trend_svg(mine, points, scen, has_page)
            if svg:
                parts.append(f"<figure>{svg}<figcaption>{escape(scen)}: in-build CPU per "
                             "image, median of the commit's rounds</figcaption></figure>")
    return "".join(parts)


def by_commit_html(docs: list[Doc], commit_date: Callable[[str], int],
                   has_page: Collection[Point], subject: Callable[[str], str],
                   page_dir: Path) -> str:
    """A row per commit (newest first, the id commit pages link to): its page, subject, the
    record files, and in-build CPU per image per scenario and variant."""
    body = []
    for p in reversed(order_points(docs, commit_date)):
        mine = [d for d in docs if point_of(d) == p]
        commit = escape(p[0][:12]) + (" (dirty)" if p[1] else "")
        if p in has_page:
            commit = f"<a href='{escape(drilldown.href(p))}'>{commit}</a>"
        recs = " ".join(
            f"<a href='{escape(_rel(d['_path'], page_dir))}'>{escape(d['workload'])} "
            f"{escape(d['started_at'][:16])}</a>" if "_path" in d else
            f"{escape(d['workload'])} {escape(d['started_at'][:16])}" for d in mine)
        cpu = "<br>".join(
            escape(f"{r['scenario']} {r['variant']}: "
                   f"{r['image_cpu_per_image_s'] * 1000:.0f} ms") for d in mine[-1:]
            for r in rows(d))
        body.append(f"<tr id='{anchor(p)}'><td class='l'>{commit}</td><td class='l'>"
                    f"{escape(subject(p[0]))}</td><td class='l'>{recs}</td>"
                    f"<td class='l'>{cpu}</td></tr>")
    return ("<table><tr><th class='l'>commit</th><th class='l'>subject</th><th class='l'>"
            "records</th><th class='l'>in-build CPU per image (latest record)</th></tr>"
            + "".join(body) + "</table>")


def commit_links(docs: list[Doc]) -> dict[Point, tuple[str, str]]:
    """Per commit with a world record: where the page shows it, and a line for its commit
    page (the latest record's world CPU per image per variant)."""
    out: dict[Point, tuple[str, str]] = {}
    for doc in docs:  # oldest first: the latest record of a commit wins
        cells = ", ".join(f"{r['variant']} {r['image_cpu_per_image_s'] * 1000:.0f} ms"
                          for r in rows(doc) if r["scenario"] == "world")
        out[point_of(doc)] = (href(point_of(doc)),
                              f"{doc['workload']}: in-build CPU per image {cells}")
    return out


# ----------------------------------------------------------------------------- the page


def write_page(docs: list[Doc], out_dir: Path, commit_date: Callable[[str], int] = lambda _c: 0,
               *, has_page: Collection[Point] = (),
               subject: Callable[[str], str] = lambda _c: "") -> Path | None:
    """`out_dir/world.html` from the world records (oldest first); None, and nothing written,
    when there are none."""
    if not docs:
        return None
    doc = docs[-1]
    point = point_of(doc)
    commit = escape(doc["commit"][:12]) + (" (dirty)" if doc.get("dirty") else "")
    if point in has_page:
        commit = f"<a href='{escape(drilldown.href(point))}'>{commit}</a>"
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>apkperf: build the world</title>{STYLE}</head><body>",
             "<p><a href='index.html'>report</a></p><h1>Build the world</h1>",
             f"<h2>Latest record</h2><p>Workload <b>{escape(doc['workload'])}</b> "
             f"({len(doc['world']['images'])} images), commit {commit}, started "
             f"{escape(doc['started_at'])}, machine {escape(str(doc.get('machine_id')))}, "
             f"mode {escape(doc['mode'])} ({escape(doc['cpu_note'])}), build trees on "
             f"{escape(str(doc.get('filesystem')))}. Medians over "
             f"{doc.get('repeat', 1)} round(s); every variant in the same run.</p>",
             totals_html(doc)]
    notes = ratio_lines(doc) + [f"digest mismatch: {p}" for p in doc.get("checks") or []]
    if notes:
        parts.append("<ul>" + "".join(
            f"<li{' class=fail' if n.startswith('digest') else ''}>{escape(n)}</li>"
            for n in notes) + "</ul>")
    parts.append("<p>Where the in-build CPU went, ms per image (round 0):</p><ul>" + "".join(
        f"<li>{escape(breakdown_line(r))}</li>" for r in doc["runs"] if r["round"] == 0)
        + "</ul>")
    for scen in _scenarios(doc):
        svg = chart_svg(doc, scen)
        if svg:
            parts.append(f"<h2 id='chart-{escape(scen)}'>CPU per image: {escape(scen)}</h2>"
                         "<p>In-build, round 0, log scale; hover a bar for what the image "
                         f"reused.</p><figure>{svg}</figure>")
    for scen in _scenarios(doc):
        parts.append(f"<h2 id='images-{escape(scen)}'>Per image: {escape(scen)}</h2>"
                     + images_html(doc, scen))
    bump = bump_html(doc)
    if bump:
        parts.append("<h2 id='bump'>What world-bump rebuilt</h2>" + bump)
    parts.append("<h2 id='trend'>Over commits</h2><p>Every stored world record; a point or "
                 "a commit opens the commit's page when the report has one.</p>"
                 + trend_html(docs, commit_date, has_page))
    parts.append("<h2 id='commits'>Records by commit</h2>"
                 + by_commit_html(docs, commit_date, has_page, subject, out_dir))
    parts.append("</body></html>")
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / PAGE
    page.write_text("\n".join(parts) + "\n")
    return page


def summary_html(docs: list[Doc], page: Path | None) -> str:
    """index.html's "Build the world" section: the latest record's headline ratios and a
    link to the world page."""
    head = "<h2>Build the world</h2>"
    if not docs or page is None:
        return head + "<p>No world records yet: run <code>apkperf world</code>.</p>"
    doc = docs[-1]
    lines = ratios(doc, "world") or [
        f"{r['scenario']} {r['variant']}: {r['image_cpu_per_image_s'] * 1000:.0f} ms CPU per "
        "image in-build" for r in rows(doc)]
    return (head + f"<p>Latest record: workload <b>{escape(doc['workload'])}</b> "
            f"({len(doc['world']['images'])} images), commit {escape(doc['commit'][:12])}"
            f"{' (dirty)' if doc.get('dirty') else ''}, started {escape(doc['started_at'])}."
            f" <a href='{escape(page.name)}'>The world page</a>: totals, CPU per image and "
            "what each image reused, what world-bump rebuilt, the trend over commits.</p>"
            + "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>")
