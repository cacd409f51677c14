"""The regression gate: a row fails when HEAD is *confidently* slower than BASE by more than the
row's threshold: the verdict is "slower" (CI above 1, change above the absolute floor) AND the
lower bound of the ratio's confidence interval exceeds 1 + threshold. Requiring the whole
interval past the threshold, not just the median, is what keeps A/A runs on a shared, noisy
machine from raising false alarms while a real slowdown (a far-off interval) still fails.
Thresholds: one for the total, optional per stage; stages not listed use the stage default,
which is looser because short stages are noisier (see `apkperf calibrate`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from perf import stats
from perf.compare import Row

DEFAULT_TOTAL_PCT = 10.0
DEFAULT_STAGE_PCT = 15.0
# CI mode: shared 2-core runners are noisy; only flag large, clear regressions.
CI_TOTAL_PCT = 25.0
CI_STAGE_PCT = 40.0
CI_MIN_ABS_S = 0.05
# Instructions counted under callgrind (perf/instructions.py) do not move with the machine's
# load, so CI and a desk use the same, tight thresholds; A/A spreads are ~0.01 % (README).
INSTRUCTIONS_TOTAL_PCT = 2.0
INSTRUCTIONS_STAGE_PCT = 3.0


@dataclass
class Thresholds:
    total_pct: float = DEFAULT_TOTAL_PCT
    stage_pct: float = DEFAULT_STAGE_PCT
    per_stage: dict[str, float] = field(default_factory=dict)

    def for_stage(self, stage: str) -> float:
        if stage in self.per_stage:
            return self.per_stage[stage]
        return self.total_pct if stage == "total" else self.stage_pct


def parse_stage_thresholds(items: list[str]) -> dict[str, float]:
    """["compress=15", "fetch=30"] -> {"compress": 15.0, "fetch": 30.0}."""
    from builder.spans import STAGES, STARTUP

    out: dict[str, float] = {}
    for item in items:
        name, sep, val = item.partition("=")
        if not sep or (name not in STAGES and name not in ("total", STARTUP)):
            raise ValueError(f"--stage-threshold {item!r}: want STAGE=PERCENT with STAGE one of "
                             f"total, {STARTUP}, {', '.join(STAGES)}")
        try:
            out[name] = float(val)
        except ValueError:
            raise ValueError(f"--stage-threshold {item!r}: {val!r} is not a number") from None
    return out


@dataclass(frozen=True)
class Failure:
    row: Row
    threshold_pct: float

    def describe(self) -> str:
        from perf.compare import METRICS, WALL

        r = self.row
        m = METRICS[r.metric]
        what = "" if m is WALL else f" {m.name}"
        return (f"{r.scenario}/{r.stage}{what}: {100 * (r.ratio - 1):+.1f}% "
                f"({m.show(r.base_median)} -> {m.show(r.head_median)}, 95% CI "
                f"x{r.ci_lo:.3f}..x{r.ci_hi:.3f}) is beyond the {self.threshold_pct:g}% "
                "threshold")


def evaluate(rows: list[Row], thresholds: Thresholds) -> list[Failure]:
    failures = []
    for r in rows:
        limit = thresholds.for_stage(r.stage)
        if r.verdict == stats.SLOWER and r.ci_lo > 1.0 + limit / 100.0:
            failures.append(Failure(r, limit))
    return failures


def log_path(root: Path, machine: str) -> Path:
    """Every gate run on this machine, one JSON line each (what the report marks)."""
    return root / ".perf" / "gate" / f"{machine}-runs.jsonl"


def log_run(root: Path, machine: str, entry: dict) -> None:
    path = log_path(root, machine)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def load_runs(root: Path, machine: str) -> list[dict]:
    """The logged gate runs, oldest first; lines that do not parse are skipped."""
    try:
        lines = log_path(root, machine).read_text().splitlines()
    except OSError:
        return []
    runs = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("commit"), str):
            runs.append(entry)
    return runs


def log_entry(rows: list[Row], failures: list[Failure], *, base: str, why: str, head: str,
              dirty: bool, impl: str, workload: str, metric: str, at: str) -> dict:
    return {"at": at, "commit": head, "dirty": dirty, "base": base, "why": why, "impl": impl,
            "workload": workload, "metric": metric,
            "scenarios": sorted({r.scenario for r in rows}),
            "failures": [{"scenario": f.row.scenario, "stage": f.row.stage,
                          "ratio": round(f.row.ratio, 4), "threshold_pct": f.threshold_pct}
                         for f in failures]}
