"""Shared session fixtures, and the apk-tools solver conformance summary.

Helpers and constants live in tests/helpers.py (test modules import them from there).

Session fixtures are made once per pytest process (with xdist, once per worker):

- `fixtures`: FIXTURES, failing clearly when ../shared/apk-fixtures is missing
- `signing_key`: an RSA key pair for repositories built in tests
- `golden_cache`: a cache directory warmed by reference, fast and stitched builds of apko's
  golden fixture (for its local repository: the expanded packages and their block indexes),
  for tests that only read a cache: building the fixture from it adds nothing. A test that
  needs a cold cache, or changes one, makes its own. Checked at the end of the session: if a
  test wrote into it, that test's teardown reports an error.
- `small_workload`: the `small` synthetic workload (`perf.workloads`), generated once
  (~5 s); read-only as well, checked the same way.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from perf.workloads import Workload, prepare_workload
from tests.helpers import FIXTURES, SOLVER_CASES, build_golden


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"fixtures not found at {FIXTURES} (../shared/apk-fixtures)")
    return FIXTURES


@pytest.fixture(scope="session")
def signing_key() -> tuple[bytes, bytes]:
    """A generated RSA key pair (private PEM, public PEM) for repositories built in tests."""
    from builder.apk.signing import generate_key

    return generate_key(2048)


def _tree_state(root: Path, ignore_suffix: str = "") -> dict[str, tuple[int, int, int]]:
    """path -> (inode, size, mtime_ns) of every file under `root` (directories left out)."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if ignore_suffix and name.endswith(ignore_suffix):
                continue
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def _changes(before: dict, after: dict) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


@pytest.fixture(scope="session")
def golden_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A warm cache for apko's golden fixture (see the module docstring); pass it as
    `build_golden(..., cache=golden_cache)`."""
    root = tmp_path_factory.mktemp("golden-cache")
    cache = root / "cache"
    for impl in ("reference", "fast", "stitched"):
        build_golden(root, root / f"warm-{impl}", "--impl", impl, cache=cache)
    # Verification stamps (*.verified) are the one thing a hot build may add: they only
    # record that a full check passed once the file is old enough (builder/repo/stamp.py).
    before = _tree_state(cache, ".verified")
    yield cache
    changed = _changes(before, _tree_state(cache, ".verified"))
    assert not changed, f"a test wrote into the shared golden_cache: {changed[:10]}"


@pytest.fixture(scope="session")
def small_workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    """The `small` workload (repository + apko.yaml), generated once; read-only."""
    workload = prepare_workload("small", tmp_path_factory.mktemp("workloads"))
    before = _tree_state(workload.repo_dir)
    yield workload
    changed = _changes(before, _tree_state(workload.repo_dir))
    assert not changed, f"a test wrote into the shared small_workload: {changed[:10]}"


# ---------------------------------------------------------------------------- solver conformance
#
# tests/test_resolver_conformance.py runs apk-tools' solver cases; the summary line counts
# them from the test reports, keyed on the nodeid. Under xdist the controller receives every
# worker's reports, so the line printed at the end covers all cases.

SOLVER_CASE = "test_resolver_conformance.py::test_solver_case["
_solver_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if SOLVER_CASE not in report.nodeid:
        return
    if report.when == "call" or report.outcome != "passed":
        # a failing setup/teardown counts as failed; a skip (not applicable) as skipped
        previous = _solver_outcomes.get(report.nodeid)
        if previous != "failed":
            _solver_outcomes[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _solver_outcomes or hasattr(terminalreporter.config, "workerinput"):
        return
    counts = Counter(_solver_outcomes.values())
    terminalreporter.write_line(
        f"apk-tools solver conformance: {counts['passed']} fresh-install cases passed, "
        f"{counts['failed']} failed, {counts['skipped']} not applicable (of {len(SOLVER_CASES)})")
