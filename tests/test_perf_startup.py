"""`apkperf startup`: fresh-process timings of every subcommand's help beside an empty
interpreter, and the importtime breakdown; stored, and shown in the report."""

from __future__ import annotations

import sys
from pathlib import Path

from perf.startup import (
    SUBCOMMANDS,
    format_table,
    import_breakdown,
    latest,
    report_section,
    run_startup,
    save,
)
from tests.helpers import REPO_ROOT


def test_startup_measured_stored_and_reported(tmp_path: Path, monkeypatch) -> None:
    result = run_startup(Path(sys.executable), REPO_ROOT, repeat=1)
    names = [c["command"] for c in result["commands"]]
    assert names[0] == "python -c pass" and len(names) == 1 + len(SUBCOMMANDS)
    assert "apkimage build --help" in names
    empty = result["commands"][0]["median_s"]
    for c in result["commands"][1:]:
        assert c["median_s"] > empty  # an interpreter plus imports costs more than none
    imp = result["imports"]
    assert imp["modules"] > 20 and imp["total_us"] > 0
    assert any(r["module"] == "argparse" for r in imp["top"])
    monkeypatch.setattr("perf.startup.machine_id", lambda: result["machine_id"])
    path = save(result, tmp_path)
    assert path.is_file() and latest(tmp_path) == __import__("json").loads(path.read_text())
    html = report_section(tmp_path)
    assert "apkimage build --help" in html and "<table>" in html
    assert "apkimage build --help" in format_table(result)
    assert report_section(tmp_path / "none") == ""


def test_import_breakdown_of_an_unknown_command_is_still_parsed() -> None:
    got = import_breakdown(Path(sys.executable), ["--version-does-not-exist"])
    assert got["modules"] > 0  # argparse failed after the imports were reported
