"""The layout holds: imports point down only, no import circle, no library module too large.

The rooms, from the bottom up (docs/architecture.md): the leaves (errors, settings), model,
sinks, route, sources, config, runtime, api, then what is built on the api (integrations, the
collector, the CLI and the package's public face). A module may import its own room or a lower
one; imports under ``if TYPE_CHECKING:`` are annotations, not arrows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: (module prefix, layer): the longest matching prefix decides.
LAYERS = [
    ("otel_rl.errors", 0), ("otel_rl.settings", 0.5),
    ("otel_rl.model", 1),
    ("otel_rl.sinks", 2),
    ("otel_rl.route", 3),
    ("otel_rl.sources", 4),
    ("otel_rl.config", 5),
    ("otel_rl.runtime", 6),
    ("otel_rl.api", 7),
    ("otel_rl.integrations", 8), ("otel_rl_collector", 8),
    ("otel_rl", 9),  # the package's public face: __init__, hf, cli
]
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for base, pkg in ((ROOT / "otel_rl", "otel_rl"), (ROOT / "collector" / "otel_rl_collector", "otel_rl_collector")):
        for path in base.rglob("*.py"):
            parts = [pkg, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _room(module: str) -> tuple[str, int]:
    prefix, layer = max(((p, n) for p, n in LAYERS if module == p or module.startswith(p + ".")),
                        key=lambda item: len(item[0]))
    if prefix == "otel_rl":  # each top-level module of the public face is a room of its own
        return module, layer
    return prefix, layer


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``path`` imports, at any depth (function-local imports included)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for a in child.names:
                    full = f"{child.module}.{a.name}"
                    found.add(full if full in modules else child.module)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_imports_point_down_only(graph):
    upward = []
    for module, targets in graph.items():
        room, layer = _room(module)
        for target in targets:
            target_room, target_layer = _room(target)
            if target_layer > layer or (target_layer == layer and target_room != room):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that run back up (or across rooms of one floor):\n" + "\n".join(sorted(upward))


def test_no_import_circle(graph):
    circles, state = [], {}

    def walk(module: str, stack: list[str]) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                walk(target, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            walk(module, [])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_library_module_is_too_large():
    large = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not large, f"modules over {MAX_LINES} lines (split them along their seams): {large}"
