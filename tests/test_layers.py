"""The shape of the house, checked on the source: acyclic imports, stages in layers, short functions.

The import graph is read from trapcls/'s source with `ast`, so it holds every import: those at
the top of a module, inside functions, and under TYPE_CHECKING. A cycle hidden in a function-level
import is a cycle too.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trapcls"

# The layers: each stage package may import the packages listed for it (and itself); core imports
# no stage. The top-level modules that join the stages (the CLI, doctor, the train workflow) may
# import any of them, and nothing may import those.
ALLOWED = {
    "core": set(),
    "training": {"core"},
    "predict": {"core"},
    "export": {"core", "predict"},
    "evaluate": {"core"},
    "results": {"core"},
    "watch": {"core", "predict", "results"},
}
TOP = {"cli", "doctor", "workflow", "folds", "oof", "__main__"}
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py under `package` (a package is its __init__)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports, anywhere in its source."""
    files = module_files(package)
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(_known(alias.name, files) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, name, is_package)
                for alias in node.names:  # `from pkg import module` imports the module itself
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else _known(base, files))
        graph[name] = {t for t in targets if t and t != name}
    return graph


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str, files: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is a module of the package (None for other packages)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in files:
            return ".".join(parts[:end])
    return None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer(module: str) -> str:
    """`core`, a stage, a TOP module, or `root` (trapcls/__init__: the version only)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in ALLOWED or parts[1] in TOP:
        return parts[1]
    raise AssertionError(f"{module} is in no layer: put it in trapcls/core or a stage package, or add it to TOP")


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    """Imports that go up or sideways between layers."""
    found = []
    for module, targets in sorted(graph.items()):
        source = layer(module)
        for target in sorted(targets):
            dest = layer(target)
            if dest in ("root", source) or source in TOP:
                continue
            if dest in TOP or dest not in ALLOWED[source]:
                found.append(f"{module} imports {target} ({source} may import {sorted(ALLOWED[source]) or 'no stage'})")
    return found


def test_the_import_graph_of_trapcls_has_no_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 40 and "trapcls.core.model.bundle" in graph["trapcls.predict.runner"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_stages_import_only_downward():
    assert wrong_way(import_graph(PACKAGE)) == []


def test_each_stage_exports_its_entry_point():
    from trapcls.evaluate import EvaluateConfig, evaluate
    from trapcls.export import export_onnx, export_tensorrt
    from trapcls.predict import PredictConfig, merge_csvs, run_predict
    from trapcls.training import TrainConfig, TrainResult, train
    from trapcls.watch import WatchConfig, Watcher

    for entry in (evaluate, export_onnx, export_tensorrt, merge_csvs, run_predict, train, Watcher, TrainResult):
        assert callable(entry)
    for config in (EvaluateConfig, PredictConfig, TrainConfig, WatchConfig):  # the configs the CLI fills in
        assert dataclasses.is_dataclass(config) and len(dataclasses.fields(config)) >= 5, config
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        from trapcls import predict

        predict.nothing  # noqa: B018


def test_the_checks_find_a_function_level_cycle_and_an_upward_import(tmp_path):
    """The two tests above can fail: a fake package with a cycle through a function-level import,
    and a core module importing a stage."""
    root = tmp_path / "trapcls"
    for folder in ("core", "predict"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "core" / "a.py").write_text("def f():\n    from trapcls.predict import b\n")
    (root / "predict" / "b.py").write_text("from ..core import a\n")
    graph = import_graph(root)
    assert graph["trapcls.core.a"] == {"trapcls.predict.b"} and graph["trapcls.predict.b"] == {"trapcls.core.a"}
    assert find_cycle(graph) == ["trapcls.core.a", "trapcls.predict.b", "trapcls.core.a"]
    assert wrong_way(graph) == ["trapcls.core.a imports trapcls.predict.b (core may import no stage)"]


def function_lengths(package: Path) -> list[tuple[str, int]]:
    """(file:function, lines of its body) for every function and method; the signature (a typer
    command's option declarations) is not counted, the body from its first statement is."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[0]
                start = first.lineno if not isinstance(first, ast.Expr) or len(node.body) == 1 else node.body[1].lineno
                found.append((f"{path.relative_to(package.parent)}:{node.name}", node.end_lineno - start + 1))
    return found


def test_no_function_body_in_trapcls_is_longer_than_80_lines():
    lengths = function_lengths(PACKAGE)
    assert len(lengths) > 300
    assert [(name, n) for name, n in lengths if n > MAX_FUNCTION_LINES] == []


def module_lengths(package: Path) -> list[tuple[str, int]]:
    """(file, lines) for every module of `package`."""
    return [(str(path.relative_to(package.parent)), len(path.read_text(encoding="utf-8").splitlines()))
            for path in sorted(package.rglob("*.py"))]


def test_no_module_in_trapcls_is_longer_than_500_lines():
    lengths = module_lengths(PACKAGE)
    assert len(lengths) > 60
    assert [(name, n) for name, n in lengths if n > MAX_MODULE_LINES] == []


def test_the_size_checks_find_a_long_function_and_a_long_module(tmp_path):
    """The two size tests above can fail: a module of 501 lines whose one function has an 81-line body
    (a docstring and a signature of option declarations do not count)."""
    root = tmp_path / "trapcls"
    root.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    options = "\n".join(f"    option{i}: int = {i}," for i in range(30))
    source = f'def command(\n{options}\n):\n    """Docstring."""\n{body}\n'
    source += "\n" * (MAX_MODULE_LINES + 1 - len(source.splitlines()))
    (root / "long.py").write_text(source)
    assert function_lengths(root) == [("trapcls/long.py:command", 81)]
    assert module_lengths(root) == [("trapcls/long.py", MAX_MODULE_LINES + 1)]
