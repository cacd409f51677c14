"""Start-up of `apkimage`: how long each subcommand takes to print its help (interpreter,
imports, argument parsing: the fixed cost every build pays before its first stage), beside
an empty interpreter, and `python -X importtime`'s breakdown of `apkimage build --help`.

Each timing is a fresh process (perf.runner.measure), median of `repeat` runs. Results are
stored as JSON under `.perf/startup/<machine-id>/` and shown in the report.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from html import escape
from pathlib import Path
from typing import Any, TypedDict

from perf import stats
from perf.machine import machine_id, machine_info
from perf.runner import build_env, measure

SUBCOMMANDS = ["", "build", "publish", "resolve", "verify", "index"]
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def time_commands(python: Path, repeat: int = 10) -> list[dict[str, Any]]:
    """[{"command", "median_s", "min_s", "runs"}]: `python -c pass`, then `apkimage [SUB]
    --help` for each subcommand, interleaved round by round."""
    argvs = {"python -c pass": [str(python), "-c", "pass"]}
    for sub in SUBCOMMANDS:
        name = f"apkimage {sub} --help".replace("  ", " ")
        argvs[name] = [str(python), "-m", "builder.cli", *([sub] if sub else []), "--help"]
    env = build_env({})
    runs: dict[str, list[float]] = {name: [] for name in argvs}
    for _ in range(repeat):
        for name, argv in argvs.items():
            res = measure(argv, env=env)
            if res.returncode != 0:
                raise RuntimeError(f"{name} exited {res.returncode}")
            runs[name].append(res.wall_s)
    return [{"command": name, "median_s": stats.median(ts), "min_s": min(ts), "runs": ts}
            for name, ts in runs.items()]


class ImportRow(TypedDict):
    """One line of `python -X importtime`."""

    self_us: int
    cumulative_us: int
    depth: int
    module: str


def import_breakdown(python: Path, argv: list[str] | None = None,
                     top: int = 20) -> dict[str, Any]:
    """`python -X importtime` of `apkimage build --help`: the modules imported directly by
    the program (depth 0), by cumulative microseconds, and the total."""
    argv = argv or ["build", "--help"]
    proc = subprocess.run([str(python), "-X", "importtime", "-m", "builder.cli", *argv],
                          capture_output=True, text=True, env=build_env({}))
    rows: list[ImportRow] = []
    for line in proc.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            rows.append({"self_us": int(m[1]), "cumulative_us": int(m[2]),
                         "depth": len(m[3]) // 2, "module": m[4]})
    roots = sorted((r for r in rows if r["depth"] == 0), key=lambda r: -r["cumulative_us"])
    return {"argv": argv, "modules": len(rows),
            "total_us": sum(r["self_us"] for r in rows), "top": roots[:top]}


def run_startup(python: Path, root: Path, repeat: int = 10) -> dict[str, Any]:
    from perf.gitrefs import head_state

    commit, dirty = head_state(root)
    info = machine_info()
    return {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": commit, "dirty": dirty, "machine": info,
            "machine_id": machine_id(info), "repeat": repeat,
            "commands": time_commands(python, repeat), "imports": import_breakdown(python)}


def save(result: dict[str, Any], root: Path) -> Path:
    d = root / ".perf" / "startup" / result["machine_id"]
    d.mkdir(parents=True, exist_ok=True)
    stamp = result["started_at"].replace(":", "").replace("-", "")
    path = d / f"{stamp}-{result['commit'][:12]}{'-dirty' if result['dirty'] else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def latest(root: Path, machine: str | None = None) -> dict[str, Any] | None:
    d = root / ".perf" / "startup" / (machine or machine_id())
    files = sorted(d.glob("*.json")) if d.is_dir() else []
    return json.loads(files[-1].read_text()) if files else None


def format_table(result: dict[str, Any]) -> str:
    lines = [f"start-up (median of {result['repeat']} fresh processes)"]
    for c in result["commands"]:
        lines.append(f"  {c['command']:28} {c['median_s'] * 1000:6.1f} ms "
                     f"(min {c['min_s'] * 1000:.1f})")
    imp = result["imports"]
    lines.append(f"python -X importtime {' '.join(imp['argv'])}: {imp['modules']} modules, "
                 f"{imp['total_us'] / 1000:.1f} ms in all; imported by the program itself:")
    for r in imp["top"][:12]:
        lines.append(f"  {r['cumulative_us'] / 1000:6.1f} ms  {r['module']}")
    return "\n".join(lines)


def report_section(root: Path | None = None) -> str:
    """The report's start-up section from the latest stored result under `root` (default:
    this repository) — "" when there is none."""
    if root is None:
        from perf.gitrefs import GitError, repo_root

        try:
            root = repo_root()
        except GitError:
            return ""
    result = latest(root)
    if result is None:
        return ""
    rows = "".join(f"<tr><td>{escape(c['command'])}</td><td>{c['median_s'] * 1000:.1f} ms</td>"
                   f"<td>{c['min_s'] * 1000:.1f} ms</td></tr>" for c in result["commands"])
    imp = result["imports"]
    mods = "".join(f"<tr><td>{escape(r['module'])}</td><td>{r['cumulative_us'] / 1000:.1f} ms"
                   "</td></tr>" for r in imp["top"])
    return (f"<h2>Start-up</h2><p>commit {escape(result['commit'][:12])}, median of "
            f"{result['repeat']} fresh processes</p><table><tr><th>command</th><th>median</th>"
            f"<th>min</th></tr>{rows}</table><p><code>python -X importtime "
            f"{escape(' '.join(imp['argv']))}</code>: {imp['modules']} modules, "
            f"{imp['total_us'] / 1000:.1f} ms; imported by the program itself:</p>"
            f"<table><tr><th>module</th><th>cumulative</th></tr>{mods}</table>")
