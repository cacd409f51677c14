"""Source trees to measure: the working tree as it is (dirty included), or a git ref checked
out in a worktree under `.perf/trees/<sha>` with its own virtualenv (cached by sha and the
hash of its pyproject.toml, `pip install -e` into it; pip's wheel cache makes re-creation
cheap; no system site-packages)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ApkImageError

WORKTREE = "WORKTREE"  # the name of "the working tree, as it is" on the command line


class GitError(ApkImageError):
    """A git command failed or a ref does not exist."""


@dataclass(frozen=True)
class Tree:
    label: str  # what the user asked for (ref name or WORKTREE)
    path: Path  # source root
    python: Path  # interpreter that has this tree's `builder` installed
    commit: str  # full sha of HEAD of that tree
    dirty: bool  # uncommitted changes (working tree only)

    def builder_argv(self) -> list[str]:
        return [str(self.python), "-m", "builder.cli"]


def git(root: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {root}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def repo_root(start: Path | None = None) -> Path:
    return Path(git(start or Path.cwd(), "rev-parse", "--show-toplevel"))


def resolve(root: Path, ref: str) -> str:
    out = git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not out:
        raise GitError(f"git ref {ref!r} does not name a commit in {root}")
    return out


def head_state(root: Path) -> tuple[str, bool]:
    """(HEAD sha, dirty?) of a tree; untracked files outside .gitignore count as dirty."""
    sha = git(root, "rev-parse", "HEAD", check=False) or "0" * 40
    dirty = bool(git(root, "status", "--porcelain", "--untracked-files=normal", check=False))
    return sha, dirty


def rev_list(root: Path, spec: str) -> list[str]:
    """Commits of `A..B` (first-parent, oldest first); a single ref means just that commit."""
    if ".." in spec:
        out = git(root, "rev-list", "--first-parent", "--reverse", spec)
        return [line for line in out.splitlines() if line]
    return [resolve(root, spec)]


def commit_dates(root: Path, shas: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for sha in shas:
        ts = git(root, "show", "-s", "--format=%ct", sha, check=False)
        out[sha] = int(ts) if ts.isdigit() else 0
    return out


def commit_subjects(root: Path, shas: list[str]) -> dict[str, str]:
    """The first line of each commit's message ("" for a sha git does not know)."""
    out: dict[str, str] = {}
    for sha in shas:
        out[sha] = git(root, "show", "-s", "--format=%s", sha, check=False)[:200]
    return out


def working_tree(root: Path, python: Path | None = None) -> Tree:
    sha, dirty = head_state(root)
    py = python or _default_python(root)
    return Tree(WORKTREE, root, py, sha, dirty)


def _default_python(root: Path) -> Path:
    venv_py = root / ".venv" / "bin" / "python"
    return venv_py if venv_py.exists() else Path(sys.executable)


def ensure_worktree(root: Path, sha: str) -> Path:
    """`git worktree add --detach .perf/trees/<sha>`; reused when it already exists."""
    path = root / ".perf" / "trees" / sha
    if (path / ".git").exists():
        current = git(path, "rev-parse", "HEAD", check=False)
        if current == sha:
            return path
        shutil.rmtree(path)
        git(root, "worktree", "prune")
    path.parent.mkdir(parents=True, exist_ok=True)
    git(root, "worktree", "prune")
    git(root, "worktree", "add", "--detach", "--force", str(path), sha)
    return path


def _pyproject_hash(tree: Path) -> str:
    p = tree / "pyproject.toml"
    return hashlib.sha256(p.read_bytes() if p.exists() else b"").hexdigest()[:12]


def ensure_venv(root: Path, tree: Path, sha: str, *, base_python: str | None = None) -> Path:
    """A venv for `tree`, at `.perf/venvs/<sha12>-<pyproject hash>`, with the tree installed
    editable. A `.ready` marker is written last so an interrupted install is redone."""
    venv = root / ".perf" / "venvs" / f"{sha[:12]}-{_pyproject_hash(tree)}"
    py = venv / "bin" / "python"
    if (venv / ".ready").exists() and py.exists():
        return py
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    creator = base_python or sys.executable
    for argv in (
        [creator, "-m", "venv", str(venv)],
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--prefer-binary", "-e", str(tree)],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True,
                              env={**os.environ, "PIP_NO_INPUT": "1"})
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise GitError(f"setting up venv {venv} for {sha[:12]} failed: {' | '.join(tail)}")
    (venv / ".ready").write_text(sha + "\n")
    return py


def prepare_tree(root: Path, ref: str) -> Tree:
    """The tree for `ref`: WORKTREE means the working tree with the project's own venv;
    anything else is resolved to a sha and checked out in its own worktree + venv."""
    if ref == WORKTREE:
        return working_tree(root)
    sha = resolve(root, ref)
    path = ensure_worktree(root, sha)
    py = ensure_venv(root, path, sha)
    return Tree(ref, path, py, sha, False)


# What decides how fast a build is: a commit that touches none of these (docs, tests) cannot
# move the timings, so the gate looks past it for its base.
CODE_PATHS = ("builder", "perf", "pyproject.toml", "Makefile")


def code_ancestors(root: Path, ref: str = "HEAD", count: int = 1) -> list[str]:
    """The commits just before the last `count` code changes on `ref`'s first-parent line
    (nearest first): for a slow commit followed by a docs commit, the first is the commit
    before the slow one, not the slow one. One `git log`: the commits that touched
    CODE_PATHS, each with its real first parent (%P is not rewritten without --parents)."""
    out = git(root, "log", "--first-parent", f"--max-count={count}", "--format=%P", ref,
              "--", *CODE_PATHS)
    return [line.split()[0] for line in out.splitlines() if line.strip()]  # root: no parent


def merge_base(root: Path, branch: str, ref: str = "HEAD") -> str | None:
    """Where `ref` left `branch` (None when the branch does not exist); equals `ref`'s own
    sha when `ref` is on `branch`."""
    for name in (branch, f"origin/{branch}"):
        if sha := git(root, "merge-base", name, ref, check=False):
            return sha
    return None


def is_ancestor(root: Path, sha: str, ref: str = "HEAD") -> bool:
    proc = subprocess.run(["git", "-C", str(root), "merge-base", "--is-ancestor", sha, ref],
                          capture_output=True)
    return proc.returncode == 0
