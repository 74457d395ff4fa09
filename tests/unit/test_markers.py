"""Every test module outside ``tests/unit`` says what it starts: ``integration`` for real
processes, ``e2e`` for the browser or the whole demo (``pytest -m "not e2e"`` relies on it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def module_marks(path: Path) -> set[str]:
    """The marks a module's ``pytestmark = pytest.mark.NAME`` (or a list of them) sets."""
    marks = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            values = node.value.elts if isinstance(node.value, ast.List) else [node.value]
            marks |= {v.attr for v in values if isinstance(v, ast.Attribute)}
    return marks


@pytest.mark.parametrize("folder,mark", [("integration", "integration"), ("e2e", "e2e")])
def test_modules_carry_their_folders_mark(folder: str, mark: str) -> None:
    modules = sorted((TESTS / folder).glob("test_*.py"))
    assert modules, f"no test modules in tests/{folder}"
    unmarked = [p.name for p in modules if mark not in module_marks(p)]
    assert not unmarked, f"tests/{folder} modules without pytestmark = pytest.mark.{mark}: " \
                         f"{', '.join(unmarked)}"
