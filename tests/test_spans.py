"""Spans: a `startup` span from process start to the first stage, measured from the
harness's spawn time when it gives one, else from the kernel's process start time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.spans import SPAWN_ENV, STARTUP, SpanRecorder, process_age_s
from tests.helpers import GOLDEN_ANNOTATION_ARGS, REPO_ROOT, golden_workdir


def test_startup_span_comes_first_and_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SPAWN_ENV, str(time.monotonic_ns() - 250_000_000))  # 0.25 s ago
    rec = SpanRecorder()
    with rec.span("config"):
        pass
    with rec.span("index", "x86_64"):
        pass
    names = [s.name for s in rec.spans]
    assert names == [STARTUP, "config", "index"]
    startup = rec.spans[0]
    assert 0.25 <= startup.wall_s < 5 and startup.attrs == {"clock": "spawn"}
    assert startup.cpu_s > 0  # the CPU this process used before its first stage
    with pytest.raises(ValueError):
        with rec.span(STARTUP):
            pass


def test_process_age_without_the_harness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SPAWN_ENV, raising=False)
    age, clock = process_age_s()
    assert clock == "proc" and 0 < age < 24 * 3600


def test_build_records_startup_measured_from_spawn(tmp_path: Path) -> None:
    """A real `apkimage build` process: its startup span covers the interpreter and the
    imports, so it is at least what an empty interpreter takes, and less than the build."""
    wd = golden_workdir(tmp_path)
    spans = tmp_path / "spans.json"
    env = {"PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": "0"}
    t0 = time.monotonic_ns()
    env[SPAWN_ENV] = str(t0)
    subprocess.run([sys.executable, "-m", "builder.cli", "build",
                    str(wd / "testdata" / "apko.yaml"), "t", str(tmp_path / "out"),
                    "--workdir", str(wd), "--cache-dir", str(tmp_path / "cache"),
                    "--spans", str(spans), *GOLDEN_ANNOTATION_ARGS],
                   cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    elapsed = (time.monotonic_ns() - t0) / 1e9
    doc = json.loads(spans.read_text())
    first = doc["spans"][0]
    assert first["name"] == STARTUP and first["attrs"]["clock"] == "spawn"
    assert 0.005 < first["wall_s"] < elapsed
    assert doc["spans"][1]["name"] == "config"


def test_memory_noted_after_every_span() -> None:
    rec = SpanRecorder()
    with rec.span("config"):
        grow = bytearray(64 << 20)  # 64 MB of anonymous memory, touched
        grow[::4096] = b"\1" * len(grow[::4096])
    doc = rec.to_json()
    assert [m["name"] for m in doc["memory"]] == [STARTUP, "config"]
    before, after = doc["memory"]
    assert set(after) >= {"peak_mb", "rss_mb", "anon_mb", "file_mb"}
    assert after["anon_mb"] - before["anon_mb"] > 50 and after["peak_mb"] >= after["rss_mb"]
    del grow


def test_peak_memory_is_the_builds_own_not_its_parents() -> None:
    """A build spawned by a large process (the harness, a pytest worker) reports its own
    peak: getrusage's ru_maxrss would start from the spawning process's resident set, which
    Linux carries over at exec."""
    ballast = bytearray(300 << 20)
    ballast[::4096] = b"\1" * len(ballast[::4096])
    child = subprocess.run(
        [sys.executable, "-c", "import json; from builder.spans import memory_mb; "
         "print(json.dumps(memory_mb()))"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    del ballast
    peak = json.loads(child.stdout)["peak_mb"]
    assert 0 < peak < 150, f"the child's peak is {peak} MB: its parent's 300 MB counted in"
