"""No import circle inside the node's or the operator's package (issue 16, DESIGN "Layout").

A circle between two modules means neither can be read, tested or replaced without the
other, and it works only as long as the order of first imports happens to suit it. This test
reads every module with `ast` (nothing is imported), draws an edge for every import that runs
(at module level or inside a function: both run; not under `if TYPE_CHECKING:`, which never
runs) to a module of the same package, and fails on every strongly connected component of
more than one module, printing its modules and the imports that close it.

Edges: `import a.b` goes to module `a.b`; `from .x import name` goes to `x.name` when that is
a submodule, else to `x`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"distsync": ROOT / "node" / "distsync",
            "distsync_operator": ROOT / "operator" / "distsync_operator"}


def module_files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for top, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([top, *parts])] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: all of them except the body of an
    `if TYPE_CHECKING:` (its `else:` runs)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def edges(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported module of the same packages: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for imp in _imports(tree):
            targets: list[str] = []
            if isinstance(imp, ast.Import):
                targets = [a.name for a in imp.names]
            else:
                if imp.level:
                    base_parts = _package_of(mod, path).split(".")
                    base_parts = base_parts[:len(base_parts) - (imp.level - 1)]
                    base = ".".join(base_parts + ([imp.module] if imp.module else []))
                else:
                    base = imp.module or ""
                for alias in imp.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for t in targets:
                if t in modules and t != mod:
                    graph[mod].setdefault(t, imp.lineno)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def describe(comp: list[str], graph: dict[str, dict[str, int]],
             modules: dict[str, Path]) -> str:
    inside = set(comp)
    lines = [" <-> ".join(comp)]
    for m in comp:
        for t, line in sorted(graph[m].items()):
            if t in inside:
                lines.append(f"    {modules[m].relative_to(ROOT)}:{line} imports {t}")
    return "\n".join(lines)


def test_the_checker_finds_a_circle_and_skips_type_checking_imports() -> None:
    """The checker itself: a two-module circle is found, a TYPE_CHECKING import is not an
    edge, and `from . import x` resolves to the submodule x."""
    graph = {"p.a": {"p.b": 1}, "p.b": {"p.a": 2}, "p.c": {"p.a": 1}}
    assert strongly_connected(graph) == [["p.a", "p.b"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"
                     "else:\n    import y\ndef f():\n    import z\n")
    assert [a.names[0].name for a in _imports(tree) if isinstance(a, ast.Import)] == ["y", "z"]


def test_no_import_circle_in_node_or_operator() -> None:
    modules = module_files()
    assert "distsync.node" in modules and "distsync_operator.handlers" in modules
    graph = edges(modules)
    circles = strongly_connected(graph)
    report = "\n".join(describe(c, graph, modules) for c in circles)
    print(report)
    assert not circles, f"{len(circles)} import circle(s):\n{report}"
