"""The package's shape: no import circle in builder/, every module mapped in the README, stage
modules that declare their implementations."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from builder.spans import STAGES
from tests.helpers import REPO_ROOT

BUILDER = REPO_ROOT / "builder"


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """builder modules imported by `path` at run time (module level or inside functions);
    imports under `if TYPE_CHECKING:` are for annotations only and do not count."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                found.add(a.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for a in node.names:  # `from builder.x import module`
                found.add(f"{node.module}.{a.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in BUILDER.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, modules) - {name} for name, path in paths.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules along it, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_no_import_circle_in_builder() -> None:
    graph = _graph()
    assert len(graph) > 50  # the walk found the package
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_imports_seen_through_functions_not_type_checking(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x.a\n"
                   "def f():\n    from x import b\n    import x.c\n")
    assert _imports(src, {"x.a", "x.b", "x.c", "x"}) == {"x", "x.b", "x.c"}


def _layout_paths(readme: str) -> set[str]:
    """Paths named by the README's layout tree: each line's first word, a `dir/` or a
    `module.py`, nested by indentation (two spaces a level)."""
    block = readme[readme.index("## Layout"):]
    block = block[block.index("```") + 3:]
    block = block[block.index("\n") + 1:block.index("```")]
    out: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        word = line.split()[0]
        if not (word.endswith("/") or word.endswith(".py")):
            continue  # a continued description
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "".join(d for _, d in stack) + word
        out.add(path)
        if word.endswith("/"):
            stack.append((indent, word))
    return out


def test_readme_maps_every_module() -> None:
    """The README's layout tree names every module and package of builder/ and perf/, and
    nothing that is not there."""
    named = _layout_paths((REPO_ROOT / "README.md").read_text())
    actual: set[str] = set()
    for root in (BUILDER, REPO_ROOT / "perf"):
        for p in root.rglob("*.py"):
            rel = p.relative_to(REPO_ROOT)
            actual.add(f"{rel.parent}/")  # a package, or a folder of modules (perf/netguard/)
            if p.name != "__init__.py":
                actual.add(str(rel))
    packages = {p for p in named if p.endswith("/") and p.startswith(("builder/", "perf/"))}
    assert sorted(actual - named) == [], "modules the README's layout does not name"
    assert sorted(n for n in named - actual
                  if n.endswith(".py") or n in packages) == [], "named but not there"


def test_every_stage_module_declares_its_stage() -> None:
    for stage in STAGES:
        spec = importlib.import_module(f"builder.stages.{stage}").STAGE
        assert spec.name == stage
        assert "reference" in spec.names()
