"""The package layers of docs/architecture.md: every import in src/dsp3d points down (or within its own
package), none points up, and no function grows past ~60 lines without saying why."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dsp3d"

# docs/architecture.md's table: package -> layer. A package may import only lower layers and itself.
LAYERS = {
    "data": 0,
    "levels": 0,
    "methods": 0,
    "progress": 0,
    "faults": 0,
    "io": 1,
    "config": 2,
    "datasets": 3,
    "preprocessing": 3,
    "sampling": 4,
    "batching": 5,
    "model": 6,
    "losses": 6,
    "evaluation": 7,
    "training": 7,
    "inference": 8,
    "workflow": 9,
    "visualization": 10,
    "report": 11,
    "cli": 12,
    "commands": 12,
    "api": 12,
    "__main__": 13,
    "__init__": 13,
}
MAX_LINES = 60  # a longer function says why in its docstring ("long because ...")


def package_of(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, package) of every dsp3d import in ``path``, top-level or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "dsp3d":  # from dsp3d import progress; __version__ belongs to the root
                names = [alias.name for alias in node.names if not alias.name.startswith("__")]
            elif node.module.startswith("dsp3d."):
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("dsp3d.")]
        found += [(node.lineno, name) for name in names]
    return found


SOURCES = sorted(SRC.rglob("*.py"))


def test_every_package_has_a_layer():
    assert {package_of(path) for path in SOURCES} <= set(LAYERS)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path):
    own = package_of(path)
    wrong = [
        f"line {line}: {own} (layer {LAYERS[own]}) imports {target} (layer {LAYERS[target]})"
        for line, target in imported_packages(path)
        if target != own and LAYERS[target] >= LAYERS[own]
    ]
    assert not wrong, "\n".join(wrong)


def test_functions_stay_short_or_say_why():
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                reason = "long because" in (ast.get_docstring(node) or "")
                if length > MAX_LINES and not reason:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "\n".join(long)


def test_every_package_says_what_it_owns_and_may_import():
    missing = []
    for init in sorted(SRC.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if "Layer" not in doc:
            missing.append(str(init.relative_to(SRC)))
    assert not missing, "package docstrings without their layer: " + ", ".join(missing)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports() -> dict[str, set[str]]:
    """module -> the dsp3d modules it imports anywhere (top level, in a function, under TYPE_CHECKING);
    ``from dsp3d.a import b`` counts as importing dsp3d.a.b where that is a module. A module's own
    packages (its ``__init__``s, which Python runs first anyway) are left out."""
    modules = {module_name(path): path for path in SOURCES}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("dsp3d"):
                    for alias in node.names:
                        full = f"{node.module}.{alias.name}"
                        found.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("dsp3d.")}
        graph[name] = {m for m in found if m in modules and m != name and not name.startswith(m + ".")}
    return graph


def test_no_module_imports_itself_through_others():
    """Within a package too, imports form no cycle (not even one closed under TYPE_CHECKING or inside
    a function): a module below another never reaches back up to it."""
    graph = module_imports()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(cycles)
