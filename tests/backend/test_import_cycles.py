"""No import cycles in the backend (``backend/neurender``) or the add-on (``blender_addon``).

The graph is read from the code with ``ast`` (nothing is imported or executed): every ``import``/``from ... import``
anywhere in a module -- inside functions too, since a deferred import that goes both ways is still two modules that
each need the other -- and ``importlib.import_module("a.b")`` with a literal name, except those under
``if TYPE_CHECKING:`` (never executed). Relative imports are resolved against the module's package. (Sub-commands
that ``neurender.cli`` loads from a list of names are plugins: they import the CLI's shared flags, and the CLI
reaches them only through ``register(subparsers)``.) A cycle is a strongly connected component of more than one module (or a module that
imports itself); the test names each one.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"neurender": REPO / "backend" / "neurender", "blender_addon": REPO / "blender_addon"}
STAGED = {"blender_addon": {"blender_addon.neurender_contract": REPO / "backend" / "neurender" / "contract.py"}}
"""Modules that exist only in the built extension (scripts/build_extension.py stages the contract as
``neurender_contract.py``); they are part of the add-on's graph."""


def module_names(package: str, root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``root`` (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Import statements of a module (``import_module("x")`` as ``import x``), skipping ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            elif (isinstance(child, ast.Call) and getattr(child.func, "attr", getattr(child.func, "id", None))
                  == "import_module" and child.args and isinstance(child.args[0], ast.Constant)
                  and isinstance(child.args[0].value, str) and not child.args[0].value.startswith(".")):
                yield ast.Import(names=[ast.alias(name=child.args[0].value)])
            stack.append(child)


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of ``modules`` it imports."""
    graph: dict[str, set[str]] = {name: set() for name in modules}

    def known(name: str) -> str | None:
        while name and name not in modules:  # "a.b.C" (a name in a module) -> "a.b"
            name = name.rpartition(".")[0]
        return name or None

    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                hit = known(target)
                if hit is not None and hit != name:  # "from . import x" in a package's __init__ names itself
                    graph[name].add(hit)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a node with an edge to itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _tree_cycles(package: str) -> list[list[str]]:
    return cycles(import_graph({**module_names(package, ROOTS[package]), **STAGED.get(package, {})}))


def test_the_backend_has_no_import_cycle():
    assert _tree_cycles("neurender") == []


def test_the_addon_has_no_import_cycle():
    assert _tree_cycles("blender_addon") == []


def test_the_checker_finds_a_cycle():
    # a synthetic graph: a -> b -> c -> a is one cycle, d -> d another; e is only imported
    assert cycles({"a": {"b"}, "b": {"c", "e"}, "c": {"a"}, "d": {"d"}, "e": set()}) == [["a", "b", "c"], ["d"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_is_read_from_the_code(tmp_path):
    """Absolute, relative and deferred imports make edges; TYPE_CHECKING imports do not."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("import pkg.a as alias\n")  # closes a -> b -> c -> a
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    (pkg / "e.py").write_text("from pkg.a import something_in_a\n")
    (pkg / "f.py").write_text("import importlib\nimportlib.import_module('pkg.e')\n")
    graph = import_graph(module_names("pkg", pkg))
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.d"] == set() and graph["pkg.e"] == {"pkg.a"} and graph["pkg.f"] == {"pkg.e"}
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
