"""Imports run one way: no cycle among inspectd's modules, and a low module loads only what it needs.

The graph is read from the source (ast), counting imports inside functions too: a lazy import still
points one module at another, and a circle through one is a layering fault waiting for an import order
to break it. Imports under `if TYPE_CHECKING:` are annotations only and are left out.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "inspectd"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """inspectd modules `path` imports, at module level or inside functions, outside TYPE_CHECKING blocks."""
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package[: len(package) - child.level + 1] + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in child.names)  # `from pkg import module`
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    # A submodule import runs its packages' __init__ first: that is an edge too.
    for mod in list(found):
        parts = mod.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    graph = {name: _imports(path, name, known) for name, path in paths.items()}
    for name in graph:  # importing a.b.c runs a and a.b first
        parts = name.split(".")
        graph[name].update(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in known)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)):
            return cycle
    return None


def test_the_graph_reader_finds_a_cycle():
    """The checker itself: a circle must be found, a chain must not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    graph = import_graph()
    assert "inspectd.config.schema" in graph["inspectd.decide"] or "inspectd.types" in graph["inspectd.decide"]
    assert "inspectd.engines.manifest" in graph["inspectd.infer.tensorrt"]  # read at module level
    assert "inspectd.engines.build" in graph["inspectd.infer.tensorrt"]  # read inside a function


def test_no_import_cycle_among_inspectd_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _loaded_by(module: str) -> list[str]:
    """Modules in sys.modules after importing `module` in a fresh interpreter."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent, timeout=120)
    return json.loads(out.stdout)


# Implementations and tooling that a pure layer must not pull in (SDKs, sources, backends, pipeline).
HEAVY = ("inspectd.camera.genicam", "inspectd.camera.replay", "inspectd.camera.synthetic", "inspectd.camera.registry",
         "inspectd.infer.tensorrt", "inspectd.infer.onnxruntime", "inspectd.infer.registry",
         "inspectd.infer.cuda_buffers", "inspectd.engines", "inspectd.pipeline", "inspectd.preprocess",
         "inspectd.plc.link", "inspectd.daemon", "inspectd.metrics",
         "harvesters", "genicam", "tensorrt", "pycuda", "onnxruntime", "cv2", "pymodbus", "snap7")


@pytest.mark.parametrize("module", ["inspectd.decide", "inspectd.config.schema"])
def test_low_layers_load_no_implementation(module):
    loaded = _loaded_by(module)
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == [], f"import {module} loads {heavy}"
    assert module in loaded
