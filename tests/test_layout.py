"""The package's shape, checked: layers import only upwards, no import circle, no class too big to read."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "qblocknb"
# What each layer may import from qblocknb, besides itself and errors.py.
ALLOWED = {
    "model": set(),
    "qmp": {"model"},
    "live": {"model", "qmp"},
    "migration": {"model", "live"},
    "backup": {"model", "live"},
    "fleet": {"model", "qmp", "live"},
    "render": {"model"},
    "widgets": {"model", "live", "migration", "render"},
    "teaching": {"model", "live"},
}
MAX_CLASS_LINES = 250


def modules() -> dict[str, ast.Module]:
    trees = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        trees[name] = ast.parse(path.read_text())
    return trees


def imports(tree: ast.Module, runtime_only: bool, known: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """qblocknb modules a module imports; with ``runtime_only``, not those under ``if TYPE_CHECKING``."""
    skipped = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                skipped |= {id(child) for child in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qblocknb"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(known)
            found |= submodules or {node.module}  # ``from pkg import submodule`` is an import of the submodule
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("qblocknb")}
    return found


def test_layers_import_only_what_is_above_them():
    trees = modules()
    wrong = []
    for name, tree in trees.items():
        layer = name.split(".")[1] if name.count(".") else None
        if layer not in ALLOWED:
            continue
        for imported in imports(tree, runtime_only=False, known=set(trees)):
            if imported not in trees:
                continue
            other = imported.split(".")[1] if imported.count(".") else None
            if other not in (None, layer, "errors") and other not in ALLOWED[layer]:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "; ".join(sorted(wrong))


def test_no_module_imports_another_in_a_circle():
    trees = modules()
    graph = {
        name: {m for m in imports(tree, runtime_only=True, known=set(trees)) if m in trees and m != name}
        for name, tree in trees.items()
    }

    def reaches_itself(start: str) -> bool:
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            if name == start:
                return True
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])
        return False

    circles = sorted(name for name in graph if reaches_itself(name))
    assert not circles, f"modules in an import circle: {circles}"


def test_no_class_is_over_250_lines():
    big = [
        f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, tree in modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
    ]
    assert not big, ", ".join(big)


# The live modules that make Machines (or are one); every other part takes the narrow interface it needs.
BUILDS_MACHINES = {"machine", "attach", "lab", "recorder", "storagedaemon"}
VIEW_LAYERS = ("widgets", "render", "model")
SESSION_MODULES = {"qblocknb.qmp.session", "qblocknb.qmp.libvirt", "qblocknb.qmp.libvirtnative"}
SESSION_CLASSES = {"Session", "LibvirtSession", "NativeSession"}


def test_parts_of_a_machine_do_not_import_it():
    trees = modules()
    wrong = [
        name
        for name, tree in trees.items()
        if name.startswith("qblocknb.live.")
        and name.split(".")[2] not in BUILDS_MACHINES
        and "qblocknb.live.machine" in imports(tree, runtime_only=False, known=set(trees))
    ]
    assert not wrong, f"these take the whole Machine (give them a Protocol of what they use): {sorted(wrong)}"


def session_branches(tree: ast.Module) -> list[int]:
    """Lines of ``isinstance(x, ...)`` calls that name a session class: a view asking which backend it has."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", "") == "isinstance"
        and len(node.args) == 2
        and {getattr(n, "id", None) or getattr(n, "attr", None) for n in ast.walk(node.args[1])} & SESSION_CLASSES
    ]


def test_views_never_see_a_backend():
    trees = modules()
    wrong = []
    for name, tree in trees.items():
        if (name.split(".")[1] if name.count(".") else None) not in VIEW_LAYERS:
            continue
        wrong += [f"{name} imports {m}" for m in imports(tree, runtime_only=False, known=set(trees)) & SESSION_MODULES]
        wrong += [f"{name}:{line} asks isinstance of a session" for line in session_branches(tree)]
    assert not wrong, "; ".join(sorted(wrong))
