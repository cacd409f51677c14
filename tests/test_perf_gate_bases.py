"""The bases `apkperf gate --ci` measures HEAD against: a docs commit after a slow one, a
creep over many commits, a branch, and the last gated commit cannot hide a regression."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from perf.commands import gate as gate_cmd
from perf.gitrefs import code_ancestors


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def _commit(repo: Path, path: str, text: str) -> str:
    f = repo / path
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", f"{path}: {text}")
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    _git(r, "init", "-q", "-b", "main")
    _git(r, "config", "user.email", "t@example.invalid")
    _git(r, "config", "user.name", "t")
    monkeypatch.chdir(r)
    return r


def test_a_docs_commit_does_not_hide_the_slow_one_before_it(repo):
    before = _commit(repo, "builder/stage.py", "fast")
    _commit(repo, "builder/stage.py", "slow")
    _commit(repo, "README.md", "docs")
    _commit(repo, "tests/test_x.py", "a test")
    bases = gate_cmd.ci_bases(repo)
    assert bases[0] == (before, "the code before HEAD's last code change")
    assert [s for s, _ in bases] == [before]  # on main, no merge-base; too short for creep


def test_creep_base_is_several_code_changes_back(repo):
    shas = [_commit(repo, "builder/stage.py", f"v{i}") for i in range(8)]
    _commit(repo, "README.md", "docs")
    assert code_ancestors(repo, "HEAD", count=gate_cmd.CREEP_CHANGES) == shas[-2:-7:-1]
    bases = dict(gate_cmd.ci_bases(repo))
    assert bases[shas[-2]] == "the code before HEAD's last code change"
    assert bases[shas[-1 - gate_cmd.CREEP_CHANGES]] == \
        f"{gate_cmd.CREEP_CHANGES} code changes back (creep)"


def test_branch_is_gated_against_its_merge_base_and_the_last_gated_commit(repo):
    _commit(repo, "builder/stage.py", "v0")
    fork = _commit(repo, "perf/x.py", "v1")
    _git(repo, "checkout", "-q", "-b", "feature")
    gated = _commit(repo, "builder/stage.py", "feature 1")
    _commit(repo, "builder/stage.py", "feature 2")
    gate_cmd.record_gated(repo, gated)
    bases = dict(gate_cmd.ci_bases(repo))
    assert bases[fork] == "the merge-base with main"
    assert bases[gated] == "the code before HEAD's last code change"  # same commit, once
    assert [s for s, _ in gate_cmd.ci_bases(repo)].count(gated) == 1
    # a gated commit that is not an ancestor (another branch) is ignored
    _git(repo, "checkout", "-q", "main")
    assert gate_cmd.last_gated(repo) is None
