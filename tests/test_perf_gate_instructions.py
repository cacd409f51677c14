"""`apkperf gate --ci --metric instructions` end to end, on a copy of this project in a git
repository of its own: a commit that slows the reference compress stage by ~20 %, followed
by a docs commit, fails the gate naming the stage; a commit that changes only a comment,
followed by a docs commit, passes. Slow: each gate builds under callgrind (~30 s a build)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from perf import instructions
from tests.helpers import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.tools]

COMPRESS = "builder/compress/gzip.py"
ANCHOR = "            out = comp.compress(chunk) if chunk else comp.flush()\n"
# ~20 % more deflate work in the reference compressor: a fifth of every chunk compressed
# once more and thrown away.
SLOWER = ("            if chunk:\n"
          "                __import__('zlib').compress(chunk[: len(chunk) // 5], level)\n"
          + ANCHOR)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def _edit(repo: Path, path: str, old: str, new: str, message: str) -> str:
    f = repo / path
    text = f.read_text()
    assert old in text, f"{path} no longer holds the line this test edits: {old!r}"
    f.write_text(text.replace(old, new, 1))
    _git(repo, "commit", "-q", "-am", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project's files as they are now (the working tree), committed as `main`."""
    why = instructions.unavailable()
    if why:
        pytest.skip(why)
    repo = tmp_path_factory.mktemp("gate") / "project"
    files = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached",
                            "--others", "--exclude-standard"], check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO_ROOT / name
        if src.is_file():
            dst = repo / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
            dst.chmod(src.stat().st_mode)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.invalid")
    _git(repo, "config", "user.name", "t")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    return repo


def _gate(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perf.cli", "gate", "--ci", "--metric",
                           "instructions", "--impl", "reference", "--scenario", "hot",
                           "--no-save"], cwd=repo, capture_output=True, text=True,
                          timeout=1200)


def test_a_slower_compress_behind_a_docs_commit_fails_the_gate(project):
    base = _git(project, "rev-parse", "HEAD")
    _git(project, "checkout", "-q", "-b", "slow", "main")
    _edit(project, COMPRESS, ANCHOR, SLOWER, "compress: more work")
    _edit(project, "README.md", "# apkimage", "# apkimage (docs edit)", "docs only")
    proc = _gate(project)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"against {base[:12]} (the code before HEAD's last code change)" in out
    failed = [line for line in out.splitlines() if "hot/compress instructions: +" in line]
    assert failed, out
    pct = float(failed[0].split("instructions: +")[1].split("%")[0])
    assert 15 < pct < 25, failed[0]


def test_a_comment_only_change_passes_the_gate(project):
    _git(project, "checkout", "-q", "-b", "same", "main")
    _edit(project, COMPRESS, ANCHOR, "            # the same work\n" + ANCHOR,
          "compress: a comment")
    _edit(project, "README.md", "# apkimage", "# apkimage (docs edit)", "docs only")
    proc = _gate(project)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "perf gate passed" in out
