"""The micro-benchmarks' results (`make bench`: pytest-benchmark, saved under `.benchmarks/`)
for the report: the latest run beside the end-to-end stages, each kernel's median against
the last run of another commit, and per commit on its drill-down page."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path


def load_runs(root: Path) -> list[dict]:
    """Every saved pytest-benchmark run under `root/.benchmarks`, oldest first; files that do
    not parse are skipped."""
    runs = []
    for path in sorted((root / ".benchmarks").glob("*/*.json")):
        try:
            doc = json.loads(path.read_text())
            commit = doc["commit_info"]
            benchmarks = [(b["name"], b["stats"]) for b in doc["benchmarks"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        runs.append({"path": path, "datetime": doc.get("datetime", ""),
                     "commit": commit.get("id") or "", "dirty": bool(commit.get("dirty")),
                     "benchmarks": dict(benchmarks)})
    runs.sort(key=lambda r: r["datetime"])
    return runs


def _ms(stats: dict, key: str) -> str:
    return f"{1000 * stats[key]:.2f}"


def table_html(run: dict, previous: dict | None) -> str:
    """One run's kernels: median, IQR, min, rounds, and the median against `previous`."""
    head = ["kernel", "median ms", "IQR ms", "min ms", "rounds"]
    if previous:
        head.append(f"vs {escape(previous['commit'][:10])}")
    rows = []
    for name, st in run["benchmarks"].items():
        cells = [escape(name), _ms(st, "median"), _ms(st, "iqr"), _ms(st, "min"),
                 str(st.get("rounds", ""))]
        if previous:
            before = previous["benchmarks"].get(name)
            cells.append(f"x{st['median'] / before['median']:.2f}" if before and
                         before.get("median") else "–")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows)
            + "</table>")


def section_html(runs: list[dict]) -> str:
    if not runs:
        return ("<h2>Micro-benchmarks</h2><p>None yet: run <code>make bench</code> "
                "(pytest-benchmark, the hot kernels in tests/bench).</p>")
    latest = runs[-1]
    previous = next((r for r in reversed(runs[:-1]) if r["commit"] != latest["commit"]), None)
    when = (f"commit {escape(latest['commit'][:12])}{' (dirty)' if latest['dirty'] else ''}, "
            f"{escape(latest['datetime'][:19])}")
    versus = (f"; the last column is the median against the last run of "
              f"{escape(previous['commit'][:12])}" if previous else "")
    return (f"<h2>Micro-benchmarks</h2><p>The hot kernels on their own (<code>make bench"
            f"</code>, pytest-benchmark): {when}{versus}.</p>" + table_html(latest, previous))
