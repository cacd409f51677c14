"""`apkimage resolve CONFIG`: pinned install list from the apko golden configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.cli import main
from tests.helpers import GOLDEN, golden_workdir


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    return golden_workdir(tmp_path)


def _run(workdir: Path, cache: Path, *extra: str) -> int:
    return main(["resolve", str(GOLDEN / "apko.yaml"), "--workdir", str(workdir),
                 "--cache-dir", str(cache), *extra])


def test_resolve_prints_pinned_list_per_arch(workdir: Path, golden_cache: Path,
                                             capsys: pytest.CaptureFixture[str]):
    assert _run(workdir, golden_cache) == 0
    assert capsys.readouterr().out.splitlines() == [
        "# x86_64", "pretend-baselayout=1.0.0-r0", "replayout=1.0.0-r0",
        "# aarch64", "pretend-baselayout=1.0.0-r0", "replayout=1.0.0-r0"]


def test_resolve_json_with_appended_package(workdir: Path, golden_cache: Path,
                                            capsys: pytest.CaptureFixture[str]):
    assert _run(workdir, golden_cache, "--arch", "amd64", "--json", "-p",
                "custom-ca-certs-1") == 0
    assert json.loads(capsys.readouterr().out) == {"x86_64": [
        "custom-ca-certs-1=1.0.0-r0", "pretend-baselayout=1.0.0-r0", "replayout=1.0.0-r0"]}


def test_resolve_unsatisfiable_world_is_one_clear_error(
        workdir: Path, golden_cache: Path, capsys: pytest.CaptureFixture[str]):
    assert _run(workdir, golden_cache, "--arch", "x86_64", "-p", "nope>2") == 1
    assert capsys.readouterr().err.strip() == (
        "apkimage: error: world requires nope>2: no provider")
