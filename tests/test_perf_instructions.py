"""Instruction counts per stage (perf/instructions.py): the dumps are attributed to the right
stages, a dump the marks do not explain is refused, and under a real valgrind a stage that
does ten times the work counts about ten times the instructions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builder.spans import MARKS_ENV, STARTUP, SpanRecorder
from perf import instructions
from perf.compare import INSTRUCTIONS, compare_records, format_rows
from perf.scenarios import ScenarioError


def test_parts_go_to_the_innermost_open_stage():
    marks = ["start fetch", "end fetch", "start oci", "start sbom", "end sbom", "end oci"]
    parts = [100, 10, 1, 20, 30, 40, 5]
    assert instructions.attribute(parts, marks) == {
        STARTUP: 100, "fetch": 10, instructions.BETWEEN: 1 + 5, "oci": 20 + 40, "sbom": 30}


def test_repeated_stages_add_up():
    marks = ["start layer", "end layer", "start layer", "end layer"]
    assert instructions.attribute([7, 1, 2, 3, 4], marks) == {
        STARTUP: 7, "layer": 1 + 3, instructions.BETWEEN: 2 + 4}


@pytest.mark.parametrize("parts, marks, says", [
    ([1, 2], ["start fetch", "end fetch"], "2 dumps for 2 stage marks"),
    ([1, 2, 3], ["start fetch", "end oci"], "does not close the open stage fetch"),
    ([1, 2], ["end fetch"], "does not close the open stage none"),
])
def test_marks_that_do_not_match_the_dumps_are_refused(parts, marks, says):
    with pytest.raises(ScenarioError, match=says):
        instructions.attribute(parts, marks)


def _dump(path: Path, count: int) -> None:
    path.write_text(f"version: 1\ncmd: x\npart: 1\n\nevents: Ir\nsummary: {count}\n"
                    f"totals: {count}\n")


def test_read_counts_reads_and_removes_the_dumps(tmp_path):
    out = tmp_path / "cg.out"
    for i, n in enumerate([50, 7], start=1):
        _dump(out.with_name(f"cg.out.{i}"), n)
    _dump(out, 3)
    counts = instructions.read_counts(out, ["start fetch", "end fetch"])
    assert counts == {STARTUP: 50, "fetch": 7, instructions.BETWEEN: 3}
    assert list(tmp_path.iterdir()) == []


def test_a_dump_the_marks_do_not_explain_is_refused(tmp_path):
    out = tmp_path / "cg.out"
    for i in (1, 2, 3):
        _dump(out.with_name(f"cg.out.{i}"), 1)
    _dump(out, 1)
    with pytest.raises(ScenarioError, match="more dumps than the build marked stages"):
        instructions.read_counts(out, ["start fetch", "end fetch"])


def test_a_missing_dump_is_named(tmp_path):
    out = tmp_path / "cg.out"
    _dump(out.with_name("cg.out.1"), 1)
    _dump(out, 1)
    with pytest.raises(ScenarioError, match=r"cg\.out\.2"):
        instructions.read_counts(out, ["start fetch", "end fetch"])


def test_marks_are_written_only_when_asked(monkeypatch):
    monkeypatch.delenv(MARKS_ENV, raising=False)
    rec = SpanRecorder()
    with rec.span("fetch"):
        pass
    assert "marks" not in rec.to_json()
    monkeypatch.setenv(MARKS_ENV, "1")
    rec = SpanRecorder()
    with rec.span("fetch"), rec.span("expand"):
        pass
    assert rec.to_json()["marks"] == ["start fetch", "start expand", "end expand", "end fetch"]


def _counted(side: str, total: int, compress: int, round_: int = 0) -> dict:
    return {"scenario": "hot", "side": side, "round": round_, "machine": {},
            "counter": "callgrind", "wall_s": 30.0, "instructions": total,
            "stages": {"compress": {"wall_s": 10.0, "instructions": compress}}}


def test_instruction_rows_judge_counts_not_seconds():
    recs = [_counted("A", 6_700_000_000, 3_500_000_000),
            _counted("B", 7_400_000_000, 4_200_000_000)]
    rows = {r.stage: r for r in compare_records(recs, "A", "B", metric=INSTRUCTIONS)}
    assert rows["compress"].verdict == "slower"
    assert rows["compress"].ratio == pytest.approx(1.2)
    assert rows["total"].metric == "instructions"
    text = format_rows(list(rows.values()), "A", "B")
    assert "million" not in text and "instructions in M" in text
    assert "3500.0" in text and "4200.0" in text


@pytest.mark.tools
def test_callgrind_counts_each_stage_of_a_real_process(tmp_path):
    """A process that loops 10x longer in `compress` than in `fetch` counts ~10x the
    instructions there; startup (the interpreter) and the rest are attributed apart."""
    why = instructions.unavailable()
    if why:
        pytest.skip(why)
    spans = tmp_path / "spans.json"
    script = (
        "import sys\n"
        "from builder.spans import SpanRecorder\n"
        "rec = SpanRecorder()\n"
        "with rec.span('fetch'):\n"
        "    sum(range(200_000))\n"
        "with rec.span('compress'):\n"
        "    sum(range(2_000_000))\n"
        "rec.write(sys.argv[1])\n")
    out = tmp_path / "cg.out"
    env = {"PATH": "/usr/bin:/bin", **instructions.ENV,
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([*instructions.prefix(out), sys.executable, "-c", script, str(spans)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    counts = instructions.read_counts(out, json.loads(spans.read_text())["marks"])
    assert set(counts) == {STARTUP, "fetch", "compress", instructions.BETWEEN}
    assert 8 < counts["compress"] / counts["fetch"] < 12
    assert counts[STARTUP] > counts["fetch"]  # the interpreter's start and the imports


def test_a_build_without_marks_is_counted_as_a_whole(tmp_path):
    """A gate base older than the stage marks: one dump, the total only."""
    out = tmp_path / "cg.out"
    _dump(out, 1234)
    assert instructions.read_total(out) == {instructions.UNMARKED: 1234}
    assert not out.exists()


def test_stages_counted_on_one_side_only_are_not_compared():
    base = _counted("A", 6_700_000_000, 3_500_000_000)
    del base["stages"]["compress"]["instructions"]  # counted as a whole
    rows = compare_records([base, _counted("B", 6_700_000_000, 3_500_000_000)], "A", "B",
                           metric=INSTRUCTIONS)
    assert [r.stage for r in rows] == ["total"]
