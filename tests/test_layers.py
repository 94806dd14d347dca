"""The package's layers: no module imports from a layer above its own, and no import cycle.

The layers (docs/architecture.md), lowest first:

    core        errors, constants, fileio, config, calibration, figures, version
    data        digitnet.data.*
    models      digitnet.models.*
    store       digitnet.store.*
    evaluation  digitnet.evaluation.*
    training    digitnet.training.*
    deploy      digitnet.deploy.*
    cli         digitnet.cli*, digitnet.__main__, and the package itself (`digitnet.load`)

Every import counts, also those inside functions: a lazy import hides a cycle, it does not remove
it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = ["core", "data", "models", "store", "evaluation", "training", "deploy", "cli"]
CORE = {"errors", "constants", "fileio", "config", "calibration", "figures", "version"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("cli", "__main__"):
        return "cli"
    if parts[1] in CORE:
        return "core"
    if parts[1] in LAYERS:
        return parts[1]
    raise AssertionError(f"{module}: not in any layer; add it to tests/test_layers.py and "
                         f"docs/architecture.md")


def imports_of(path: Path, module: str) -> set[str]:
    """digitnet modules that `module` imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from digitnet.models import cnn` imports the submodule when there is one
            names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] == "digitnet"}
    return found


def package_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in sorted(SRC.joinpath("digitnet").rglob("*.py"))}
    graph = {}
    for module, path in paths.items():
        targets = set()
        for name in imports_of(path, module):
            while name not in paths and "." in name:  # `digitnet.store.LoadedModel` -> module
                name = name.rsplit(".", 1)[0]
            if name in paths and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


GRAPH = package_graph()


def test_the_graph_is_read():
    """The checks below see real imports (a parser that found none would pass them all)."""
    assert len(GRAPH) > 40
    assert "digitnet.data.idx" in GRAPH["digitnet.data.mnist"]
    assert "digitnet.models" in GRAPH["digitnet.store"] or any(
        m.startswith("digitnet.store.") and "digitnet.models" in GRAPH[m] for m in GRAPH)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_from_a_higher_layer(module):
    mine = LAYERS.index(layer_of(module))
    upward = sorted(t for t in GRAPH[module] if LAYERS.index(layer_of(t)) > mine)
    assert not upward, (f"{module} ({layer_of(module)}) imports from a higher layer: "
                        + ", ".join(f"{t} ({layer_of(t)})" for t in upward))


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components: any component of more than one module is a cycle
    (a package's __init__ that re-exports its submodules counts too, if one of them imports the
    package back)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle():
    assert not find_cycles(GRAPH), f"import cycles: {find_cycles(GRAPH)}"


def test_the_cycle_check_finds_a_cycle_through_a_lazy_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_the_layer_check_fails_on_an_upward_import(tmp_path):
    """The check itself: a data module importing the store is refused."""
    path = tmp_path / "digitnet" / "data" / "bad.py"
    path.parent.mkdir(parents=True)
    path.write_text("def f():\n    from digitnet.store import load_model\n")
    assert imports_of(path, "digitnet.data.bad") == {"digitnet.store", "digitnet.store.load_model"}
    assert LAYERS.index(layer_of("digitnet.store")) > LAYERS.index(layer_of("digitnet.data.bad"))


MAX_LINES = 400
LONG_FILE_NOTE = "longer than 400 lines because"  # in the module docstring of a file that is


def test_every_file_is_short_or_says_why_it_is_not():
    long = []
    for path in sorted(SRC.joinpath("digitnet").rglob("*.py")):
        lines = path.read_text().count("\n")
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and LONG_FILE_NOTE not in docstring.lower():
            long.append(f"{path.relative_to(SRC)} ({lines} lines)")
    assert not long, (f"files over {MAX_LINES} lines without a note ({LONG_FILE_NOTE!r}) in the "
                      f"module docstring: {', '.join(long)}")
