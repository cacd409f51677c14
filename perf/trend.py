"""Trend charts from stored run records: per scenario, the median total and per-stage wall
time over commits (ordered by commit date), one panel per impl profile, PNG + SVG."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from perf import stats
from perf.records import metric
from perf.runner import stage_names

# Stable colours per stage, so the same stage looks the same in every chart.
STAGE_COLOURS = {
    "config": "#7f7f7f", "index": "#bcbd22", "resolve": "#17becf", "fetch": "#1f77b4",
    "expand": "#ff7f0e", "install": "#2ca02c", "mutate": "#9467bd", "layer": "#8c564b",
    "compress": "#d62728", "sbom": "#e377c2", "oci": "#aec7e8", "publish": "#98df8a",
}


def point_key(rec: dict) -> tuple[str, bool]:
    return rec["commit"], bool(rec["dirty"])


def order_points(records: list[dict], commit_date: Callable[[str], int]) -> list[tuple[str, bool]]:
    """Commits oldest first (by commit date, then first run time); a dirty tree comes right
    after its commit."""
    first_seen: dict[tuple[str, bool], str] = {}
    for r in records:
        k = point_key(r)
        first_seen[k] = min(first_seen.get(k, r["started_at"]), r["started_at"])
    return sorted(first_seen, key=lambda k: (commit_date(k[0]), k[1], first_seen[k]))


def series(records: list[dict], points: list[tuple[str, bool]], stage: str,
           field: str = "wall_s") -> list[float | None]:
    out: list[float | None] = []
    for p in points:
        vals = [v for r in records if point_key(r) == p
                and (v := metric(r, stage, field)) is not None]
        out.append(stats.median(vals) if vals else None)
    return out


def label(point: tuple[str, bool]) -> str:
    return point[0][:8] + ("+dirty" if point[1] else "")


def gate_marks(gate_runs: list[dict], workload: str, scenario: str,
               impl: str) -> dict[tuple[str, bool], list[str]]:
    """Per trend point, what the gate found against it in this chart's (workload, scenario,
    impl): ["compress +21.0% (wall, vs 1a2b3c4d)", ...]."""
    marks: dict[tuple[str, bool], list[str]] = {}
    for run in gate_runs:
        if run.get("workload") != workload or run.get("impl") != impl:
            continue
        for f in run.get("failures") or []:
            if f.get("scenario") == scenario:
                marks.setdefault((run["commit"], bool(run.get("dirty"))), []).append(
                    f"{f['stage']} {100 * (f['ratio'] - 1):+.1f}% ({run.get('metric', 'wall')}, "
                    f"vs {str(run.get('base'))[:8]})")
    return marks


def render_trends(records: list[dict], out_dir: Path,
                  commit_date: Callable[[str], int] = lambda _c: 0, *,
                  links: Callable[[tuple[str, bool]], str] | None = None,
                  gate_runs: list[dict] | None = None) -> list[Path]:
    """One PNG and one SVG per (workload, scenario): panels per impl, a thick line for the
    total, a dashed one for the measured speed of light (hot/offline runs), and a line per
    stage; returns the files written. In the SVG every total point and commit label links to
    `links(point)` (the commit's drill-down page); commits the gate failed are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    keys = sorted({(r["workload"], r["scenario"]) for r in records})
    for workload, scenario in keys:
        recs = [r for r in records if r["workload"] == workload and r["scenario"] == scenario]
        impls = sorted({r["impl"] for r in recs})
        fig, axes = plt.subplots(len(impls), 1, figsize=(11, 4.2 * len(impls)), squeeze=False,
                                 sharex=False)
        for ax, impl in zip(axes[:, 0], impls, strict=True):
            irecs = [r for r in recs if r["impl"] == impl]
            points = order_points(irecs, commit_date)
            xs = list(range(len(points)))
            tot = series(irecs, points, "total")
            ax.plot(xs, [v if v is not None else float("nan") for v in tot], color="black",
                    linewidth=2.5, marker="o", label="total (process wall)")
            if links is not None:
                hits = ax.scatter(xs, [v if v is not None else float("nan") for v in tot],
                                  s=90, color="black", zorder=5)
                hits.set_urls([links(p) for p in points])
            marks = gate_marks(gate_runs or [], workload, scenario, impl)
            flagged = [(x, p) for x, p in zip(xs, points, strict=True) if p in marks]
            for n, (x, p) in enumerate(flagged):
                y = tot[x] if tot[x] is not None else 0.0
                ax.scatter([x], [y], s=260, marker="X", color="#d62728", zorder=6,
                           label="gate failed" if n == 0 else None)
                ax.annotate("gate: " + "; ".join(marks[p][:2]), (x, y), fontsize=7,
                            color="#d62728", xytext=(6, 10), textcoords="offset points")
            floor = series(irecs, points, "total", "speed_of_light_s")
            if any(v is not None for v in floor):
                ax.plot(xs, [v if v is not None else float("nan") for v in floor],
                        color="grey", linestyle="--", linewidth=1.5,
                        label="floor (speed of light)")
            for stage in stage_names(irecs):
                ys = series(irecs, points, stage)
                ax.plot(xs, [v if v is not None else float("nan") for v in ys], marker=".",
                        linewidth=1.3, color=STAGE_COLOURS.get(stage), label=stage)
            ax.set_title(f"{workload} / {scenario} / impl {impl}", fontsize=11)
            ax.set_ylabel("wall time, median (s)")
            ax.set_xticks(xs)
            ticks = ax.set_xticklabels([label(p) for p in points], rotation=30, ha="right",
                                       fontsize=8)
            if links is not None:
                for tick, p in zip(ticks, points, strict=True):
                    tick.set_url(links(p))
            ax.set_xlabel("commit (oldest → newest)")
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        stem = out_dir / f"trend-{workload}-{scenario}".replace(" ", "_")
        for ext in ("png", "svg"):
            path = stem.with_suffix(f".{ext}")
            fig.savefig(path, dpi=110)
            written.append(path)
        plt.close(fig)
    return written


def render_stage_bars(records: list[dict], path: Path, title: str) -> Path:
    """Stacked horizontal bars: median wall time per stage for each scenario/impl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["scenario"], r["side"]) for r in records})
    stages = stage_names(records)
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(groups) + 1.8))
    ys = list(range(len(groups)))
    left = [0.0] * len(groups)
    for stage in stages:
        widths = []
        for scen, side in groups:
            vals = [v for r in records if r["scenario"] == scen and r["side"] == side
                    and (v := metric(r, stage)) is not None]
            widths.append(stats.median(vals) if vals else 0.0)
        ax.barh(ys, widths, left=left, color=STAGE_COLOURS.get(stage), label=stage,
                edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, (scen, side) in zip(ys, groups, strict=True):
        tot = [r["wall_s"] for r in records if r["scenario"] == scen and r["side"] == side]
        ax.plot([stats.median(tot)], [y], marker="|", color="black", markersize=18)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{s} / {i}" for s, i in groups], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("wall time, median (s); black tick = whole process")
    ax.set_title(title, fontsize=11)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
