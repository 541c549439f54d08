"""The shape of the source (DESIGN: layout): short functions with few parameters, imports at module
level, and no import cycle inside the package."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "critical_kernels"
MODULES = sorted(SRC.rglob("*.py"))
MAX_LINES = 60  # from the def line to the last line, docstring included
MAX_PARAMETERS = 8  # self / cls not counted
MAX_OPTIONS = 12  # a command-line command's parameters are its options, never a call's arguments


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _parameters(node) -> int:
    a = node.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    return len([n for n in names if n not in ("self", "cls")])


def _is_command(node) -> bool:
    """A Typer command (@app.command()): its signature is the command line's option list."""
    return any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "command"
        for d in node.decorator_list
    )


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _internal_imports(path: Path, tree) -> list[tuple[ast.stmt, set[str]]]:
    """(statement, modules of the package it imports) for every import statement in a module."""
    module, is_package = _module_name(path), path.name == "__init__.py"
    known = {_module_name(p) for p in MODULES}
    out = []
    for node in ast.walk(tree):
        targets = set()
        if isinstance(node, ast.Import):
            targets = {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            targets = {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
        targets = {t for t in targets if t.split(".")[0] == "critical_kernels" and t in known}
        if targets:
            out.append((node, targets))
    return out


def test_no_function_is_longer_than_60_lines_or_takes_more_than_8_parameters():
    """Commands of the command line may take up to MAX_OPTIONS: one parameter per option."""
    offenders = []
    for path in MODULES:
        for node in _functions(ast.parse(path.read_text())):
            lines = node.end_lineno - node.lineno + 1
            where = f"{path.relative_to(SRC)}:{node.lineno} {node.name}"
            if lines > MAX_LINES:
                offenders.append(f"{where}: {lines} lines")
            if _parameters(node) > (MAX_OPTIONS if _is_command(node) else MAX_PARAMETERS):
                offenders.append(f"{where}: {_parameters(node)} parameters")
    assert not offenders, "\n".join(offenders)


def test_no_project_import_sits_inside_a_function():
    offenders = []
    for path in MODULES:
        tree = ast.parse(path.read_text())
        inner = {id(n) for f in _functions(tree) for n in ast.walk(f)}
        for node, targets in _internal_imports(path, tree):
            if id(node) in inner:
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} imports {sorted(targets)}")
    assert not offenders, "\n".join(offenders)


def _import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports at module level (a package's __init__ stands for the
    package; importing a submodule also runs its parent package, which is not an edge here)."""
    graph = {}
    for path in MODULES:
        module = _module_name(path)
        tree = ast.parse(path.read_text())
        inner = {id(n) for f in _functions(tree) for n in ast.walk(f)}
        edges = set()
        for node, targets in _internal_imports(path, tree):
            if id(node) not in inner:
                edges |= {t for t in targets if t != module and not module.startswith(t + ".")}
        graph[module] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node], _ = "open", stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = "done", stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_import_graph())
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"a.x"}, "a.x": {"a.y"}, "a.y": {"a.x"}}, ["a.x", "a.y", "a.x"]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _cycle(graph) == expected
