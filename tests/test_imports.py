"""The package's import graph: dependencies point one way, down the data path.

Read from the source with :mod:`ast`, so it sees every ``import`` statement, at the top of a
module or inside a function, whether or not it runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import adares

PACKAGE_ROOT = Path(adares.__file__).parent
CLI_ROOT = PACKAGE_ROOT.parent / "cli"


def _module_name(path: Path) -> str:
    if path.is_relative_to(CLI_ROOT):
        parts = ("adares", "cli", *path.relative_to(CLI_ROOT).with_suffix("").parts)
    else:
        parts = ("adares", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    files = [*PACKAGE_ROOT.rglob("*.py"), *CLI_ROOT.rglob("*.py")]
    return {_module_name(path): path for path in files if "pretrained" not in path.parts}


def _imported(tree: ast.AST, *, module: str, package: bool) -> set[str]:
    """Names of the adares modules a source imports (``from adares import x`` counts as adares)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return {name for name in names if name == "adares" or name.startswith("adares.")}


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    graph = {}
    for module, path in sources.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for name in _imported(tree, module=module, package=path.name == "__init__.py"):
            # `import adares.a.b` depends on adares.a.b (the longest known prefix)
            while name not in sources and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in sources and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# The package root imports its public names lazily (on first attribute access); every module
# may import `adares` itself for __version__ and the error classes.
_ROOT = "adares"


def test_no_import_cycle_among_adares_modules():
    graph = {module: targets - {_ROOT} for module, targets in _graph().items() if module != _ROOT}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("adares.functional.mel", "adares.frontend"),
        ("adares.frontend", "adares.importance"),
        ("adares.importance", "adares.extractor"),
        ("adares.extractor", "adares.compressor"),
        ("adares.compressor", "adares.registry"),
    ],
)
def test_the_data_path_points_down(lower, higher):
    graph = _graph()
    assert higher not in _reachable(graph, lower), f"{lower} reaches {higher}"


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen and target != _ROOT:
                seen.add(target)
                todo.append(target)
    return seen
