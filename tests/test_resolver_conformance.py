"""apk-tools' own solver test cases (FIXTURES/apk-tools-solver-tests), run against resolve().

Each ``.test`` has ``@ARGS``, ``@REPO [@tag] file``, ``@CACHE``, ``@INSTALLED``, ``@WORLD`` and
``@EXPECT`` sections. Fresh installs (``add`` into an empty root) must give exactly the
``(i/n) Installing name[@tag] (version)`` lines, in order; expected ``ERROR`` output must be a
ResolveError. The fixtures come from apk-tools 3, hence ``strict_virtuals``. Cases that
upgrade/remove an existing installation, or use apk features the builder does not have
(``-t`` virtual packages, ``--force-broken-world``), are skipped with the reason.

The summary line at the end of the run ("apk-tools solver conformance: ...") is counted in
conftest.py from the test reports, so under xdist it covers every worker's cases.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from builder.apk.model import Package, parse_index_text
from builder.errors import ResolveError
from builder.resolve import resolve
from tests.helpers import SOLVER_CASES, SOLVER_DIR

INSTALL_RE = re.compile(r"^\(\d+/\d+\) Installing (\S+) \((.+)\)$")


@dataclass
class Case:
    path: Path
    args: list[str] = field(default_factory=list)
    repos: list[tuple[str, str]] = field(default_factory=list)  # (tag, file)
    installed: str = ""
    world: list[str] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)


def parse_case(path: Path) -> Case:
    case = Case(path)
    in_expect = False
    for line in path.read_text().splitlines():
        if in_expect:
            case.expect.append(line)
        elif line.startswith("@ARGS"):
            case.args = line.split()[1:]
        elif line.startswith(("@REPO", "@CACHE")):
            parts = line.split()[1:]
            tag = parts[0][1:] if parts[0].startswith("@") else ""
            case.repos.append((tag, parts[-1]))
        elif line.startswith("@INSTALLED"):
            case.installed = line.split()[1]
        elif line.startswith("@WORLD"):
            case.world = line.split()[1:]
        elif line.startswith("@EXPECT"):
            in_expect = True
    return case


def not_applicable(case: Case) -> str:
    if case.installed:
        return "changes an existing installation (@INSTALLED)"
    positional = [a for a in case.args if not a.startswith("-")]
    if not positional or positional[0] != "add":
        return f"apk command {positional[:1]} is not a fresh install"
    if "-t" in case.args or "--virtual" in case.args:
        return "creates a virtual package (-t), not a builder feature"
    if "--force-broken-world" in case.args:
        return "--force-broken-world is not a builder feature"
    return ""


def load_packages(case: Case) -> list[Package]:
    """Load the repos like apk's database: one package per checksum, first repo wins."""
    seen: set[bytes] = set()
    packages: list[Package] = []
    for tag, name in case.repos:
        for pkg in parse_index_text((SOLVER_DIR / name).read_text(), source=name):
            key = base64.b64decode(pkg.checksum[2:]) if pkg.checksum.startswith("Q1") else b""
            if key and key in seen:
                continue  # same identity already known (non-canonical base64 counts too)
            seen.add(key)
            pkg.repository, pkg.repository_tag = name, tag
            packages.append(pkg)
    return packages


@pytest.mark.parametrize("path", SOLVER_CASES, ids=[p.stem for p in SOLVER_CASES])
def test_solver_case(path: Path) -> None:
    case = parse_case(path)
    reason = not_applicable(case)
    if reason:
        pytest.skip(reason)
    world = case.world + [a for a in case.args if not a.startswith("-")][1:]
    packages = load_packages(case)
    if any(line.startswith("ERROR") for line in case.expect):
        with pytest.raises(ResolveError):
            resolve(world, packages, arch="x86_64", strict_virtuals=True)
    else:
        expected = [m.groups() for m in map(INSTALL_RE.match, case.expect) if m]
        got = [(f"{p.name}@{p.repository_tag}" if p.repository_tag else p.name, p.version)
               for p in resolve(world, packages, arch="x86_64", strict_virtuals=True)]
        assert got == expected
