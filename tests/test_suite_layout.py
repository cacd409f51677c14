"""The test suite's own rules: shared code lives in tests/helpers.py (no test module imports
another), and a test that needs a Debian tool carries the `tools` marker, so `make test-fast`
(`-m "not slow and not tools and not network"`) runs without them."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _test_modules() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def _imported_modules(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_no_test_module_imports_another() -> None:
    found = []
    for path in [*_test_modules(), TESTS / "conftest.py", TESTS / "helpers.py"]:
        for name in _imported_modules(ast.parse(path.read_text())):
            if name.rsplit(".", 1)[-1].startswith("test_"):
                found.append(f"{path.relative_to(TESTS)} imports {name}")
    assert found == [], "move what they share to tests/helpers.py"


def _is_tools_mark(node: ast.expr) -> bool:
    """`pytest.mark.tools` (bare or called)."""
    if isinstance(node, ast.Call):
        node = node.func
    return isinstance(node, ast.Attribute) and node.attr == "tools"


def _calls(fn: ast.AST) -> set[str]:
    return {n.func.id for n in ast.walk(fn)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def test_tests_needing_tools_carry_the_marker() -> None:
    unmarked = []
    for path in _test_modules():
        tree = ast.parse(path.read_text())
        module_marked = any(
            isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            and any(_is_tools_mark(m) for m in (
                node.value.elts if isinstance(node.value, ast.List | ast.Tuple)
                else [node.value]))
            for node in tree.body)
        functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        # Functions of the module that call require_tool, directly or through each other.
        needing = {"require_tool"}
        while True:
            more = {name for name, fn in functions.items() if _calls(fn) & needing} - needing
            if not more:
                break
            needing |= more
        for name, fn in functions.items():
            if not name.startswith("test_") or not _calls(fn) & needing or module_marked:
                continue
            if not any(_is_tools_mark(d) for d in fn.decorator_list):
                unmarked.append(f"{path.relative_to(TESTS)}::{name}")
    assert unmarked == [], "these call require_tool() without @pytest.mark.tools"
