"""The layout rules of docs/architecture.md, checked on the source with ``ast``.

- imports between parity's packages run one way (no cycle; the low layers import nothing above them);
- every deliberate raise is a ParityError subclass (no bare ValueError / TypeError / RuntimeError);
- no module over 600 lines, no function over 80;
- no private name (``_x``) is imported from another package.

Function-level (lazy) imports count like top-level ones: a cycle hidden in a function is a cycle.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "parity"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

#: Layers from the bottom up (docs/architecture.md). A unit may import its own layer and below.
LAYERS = [
    {"_version", "errors", "limits", "exitcodes", "safefs", "redact", "results"},
    {"trace"},
    {"capture", "importers", "events", "torch", "demo"},
    {"compare"},
    {"localize"},
    {"report"},
    {"bundle", "contracts", "testing", "pytest_plugin"},
    {"commands", "cli"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts)
        if path.name == "__init__.py":
            name = name.removesuffix(".__init__")
            package = name
        else:
            package = name.rsplit(".", 1)[0]
        yield path, name, package, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


MODULES = list(_modules())


def _unit(module: str) -> str:
    """``parity.compare.diff`` -> ``compare``; ``parity.bundle`` -> ``bundle``; ``parity`` -> ``parity``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "parity"


def _imports(tree: ast.AST, package: str):
    """(target module, imported names, line) of every parity import in ``tree``, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "parity":
                yield target, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "parity":
                    yield a.name, [], node.lineno


def _graph() -> dict[str, dict[str, str]]:
    """unit -> {imported unit: "file:line" of one such import}."""
    graph: dict[str, dict[str, str]] = {}
    for path, name, package, tree in MODULES:
        a = _unit(name)
        for target, names, line in _imports(tree, package):
            targets = [target]
            if target == "parity":  # from parity import trace, exitcodes: the named submodules
                targets = [f"parity.{n}" for n in names if (SRC / n).exists() or (SRC / f"{n}.py").exists()]
            for t in targets:
                b = _unit(t)
                if b not in (a, "parity") and a != "parity":
                    graph.setdefault(a, {}).setdefault(b, f"{path.relative_to(SRC.parent)}:{line}")
    return graph


def _cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_between_packages_has_no_cycle():
    graph = _graph()
    assert "compare" in graph and "trace" in graph["compare"]  # the scan sees real edges
    cycles = _cycles(graph)
    detail = [" <-> ".join(c) + ": " + "; ".join(f"{a}->{b} at {graph[a][b]}" for a in c for b in c if b in graph.get(a, {}))
              for c in cycles]
    assert not cycles, "import cycles between parity's packages:\n" + "\n".join(detail)


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""}}) == [["a", "b", "c"]]


def test_imports_run_down_the_layers():
    upward = []
    for a, targets in _graph().items():
        for b, where in targets.items():
            assert a in RANK and b in RANK, f"{a} or {b} is not placed in a layer of tests/test_architecture.py"
            if RANK[b] > RANK[a]:
                upward.append(f"{a} (layer {RANK[a]}) imports {b} (layer {RANK[b]}) at {where}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(sorted(upward))


BARE = {"ValueError", "TypeError", "RuntimeError"}


def test_every_deliberate_raise_is_a_parity_error():
    bare = []
    for path, _, _, tree in MODULES:
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id in BARE:
                    bare.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: raise {exc.id}")
    assert not bare, "raise a parity.errors.ParityError subclass instead:\n" + "\n".join(bare)


def test_modules_and_functions_stay_small():
    big = []
    for path, _, _, tree in MODULES:
        lines = path.read_text(encoding="utf-8").count("\n")
        if lines > MAX_MODULE_LINES:
            big.append(f"{path.relative_to(SRC.parent)}: {lines} lines (> {MAX_MODULE_LINES})")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    big.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {node.name}() {n} lines "
                               f"(> {MAX_FUNCTION_LINES})")
    assert not big, "split along a seam:\n" + "\n".join(big)


def test_no_private_name_is_imported_from_another_package():
    leaks = []
    for path, name, package, tree in MODULES:
        for target, names, line in _imports(tree, package):
            mod_private = any(part.startswith("_") and part != "__init__" for part in target.split(".")[1:])
            other = _unit(target) != _unit(name)
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if other and (private or mod_private) and target != "parity._version":
                leaks.append(f"{path.relative_to(SRC.parent)}:{line}: from {target} import {', '.join(names)}")
    assert not leaks, "promote these to public names in their home module:\n" + "\n".join(leaks)


@pytest.mark.parametrize("rule", [test_every_deliberate_raise_is_a_parity_error])
def test_the_raise_rule_sees_a_bare_raise(rule, monkeypatch):
    tree = ast.parse("def f():\n    raise ValueError('x')\n")
    monkeypatch.setattr(sys.modules[__name__], "MODULES", [(SRC / "fake.py", "parity.fake", "parity", tree)])
    with pytest.raises(AssertionError, match="fake.py:2: raise ValueError"):
        rule()
