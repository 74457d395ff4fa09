"""The layers run one way, with no circles and no private names across modules.

Reads every module's imports (top level and inside functions) with ``ast``; each failure
names the module, the line and the offending import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"app": "edgewise.app", "agents": "edgewise.agents", "tables": "edgewise.tables",
           "models": "edgewise.models"}

#: Each layer and the layers it may import (itself included).
FLOOR = {"core": {"core"}, "services": {"services"}}
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "services": {"services"},
    "models": {"core", "models"},
    "adapters": {"core", "models", "adapters"},
    "tables": {"core", "adapters", "tables"},
    "agents": {"core", "services", "models", "adapters", "tables", "agents"},
    "run": {"core", "services", "models", "adapters", "tables", "agents", "run", "cli", "bench"},
    "cli": {"core", "services", "models", "adapters", "tables", "agents", "run", "cli", "bench"},
    "bench": {"core", "services", "models", "adapters", "tables", "agents", "run", "cli",
              "bench"},
    "package": set(),  # edgewise.app and edgewise.agents' own __init__: docstrings only
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    line: int
    target: str  # the imported module
    names: tuple[str, ...]  # names taken from it (from-imports)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    dotted = [FOLDERS[parts[0]], *parts[1:]]
    if dotted[-1] == "__init__":
        dotted.pop()
    return ".".join(dotted)


def modules() -> dict[str, Path]:
    found = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = modules()


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[1] == "app":
        return parts[2] if len(parts) > 2 else "package"
    if parts[1] == "agents" and len(parts) == 2:
        return "package"
    return parts[1]


def resolve(target: str) -> str:
    """The edgewise module an import refers to (a name imported from a package may be one)."""
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def imports_of(module: str) -> list[Import]:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("edgewise."):
                    found.append(Import(module, node.lineno, alias.name, ()))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("edgewise."):
                continue
            names = tuple(alias.name for alias in node.names)
            for name in names:  # "from edgewise.agents.cdc import postgres" imports a module
                sub = f"{node.module}.{name}"
                if sub in MODULES:
                    found.append(Import(module, node.lineno, sub, ()))
            found.append(Import(module, node.lineno, node.module, names))
    return found


ALL_IMPORTS = [imp for module in MODULES for imp in imports_of(module)]


def test_every_module_is_found() -> None:
    assert "edgewise.app.core.settings" in MODULES
    assert "edgewise.agents.cdc.capture" in MODULES
    assert len(ALL_IMPORTS) > 100


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_run_one_way(module: str) -> None:
    layer = layer_of(module)
    wrong = [
        f"{module}:{imp.line} imports {imp.target} ({layer} may import "
        f"{', '.join(sorted(ALLOWED[layer])) or 'nothing of edgewise'})"
        for imp in ALL_IMPORTS
        if imp.module == module and layer_of(resolve(imp.target)) not in ALLOWED[layer]
    ]
    assert not wrong, "\n".join(wrong)


def stage_modules() -> set[str]:
    """Modules that attach a stage: they define ``register(ctx)``."""
    stages = set()
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "register" for n in tree.body):
            stages.add(module)
    return stages


def test_nothing_below_the_roof_imports_a_stage() -> None:
    stages = stage_modules()
    assert "edgewise.agents.score" in stages and "edgewise.agents.cdc.capture" in stages
    roof = {"run", "cli", "bench"}
    wrong = [
        f"{imp.module}:{imp.line} imports the stage {resolve(imp.target)}"
        for imp in ALL_IMPORTS
        if resolve(imp.target) in stages and layer_of(imp.module) not in roof
    ]
    assert not wrong, "\n".join(wrong)


def test_no_private_names_across_modules() -> None:
    wrong = [
        f"{imp.module}:{imp.line} imports {name} from {imp.target}"
        for imp in ALL_IMPORTS for name in imp.names
        if name.startswith("_") and resolve(imp.target) != imp.module
    ]
    for module, path in MODULES.items():  # module._private through an imported module
        aliases = {}
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                    "edgewise."):
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("edgewise.") and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                wrong.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles() -> None:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for imp in ALL_IMPORTS:
        target = resolve(imp.target)
        if target != imp.module and target in MODULES:
            graph[imp.module].add(target)
    # a package's __init__ is imported on the way to its modules: not an edge of its own
    circles = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(" <-> ".join(sorted(component)))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(circles)
