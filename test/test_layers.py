"""The package's layers, enforced: no import cycle (function-level imports included), no upward import,
and rclpy only in the ROS layer (node, ros_io). An ast walk of defm_ros/, no import of the code itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "defm_ros"

# A folder is a layer; lower layers never import higher ones. Data flows message -> codec -> preprocessing
# -> model -> backend -> encoder -> features -> message, and the applications (the ROS node, extraction, the
# CLI) sit on top, beside each other.
LAYERS = [
    ("config", ["config", "info"]),
    ("data", ["msgs", "preprocess", "features", "pca", "sample_data", "inputs"]),
    ("models", ["models"]),
    ("backends", ["backends"]),
    ("encoder", ["encoder", "refiner", ""]),  # "" is the package root: `from defm_ros import Encoder`
    ("applications", ["node", "extract"]),
    ("cli", ["cli"]),  # its verbs drive extraction and the encoder
]
SIBLINGS = ["node", "extract"]  # the applications: neither imports the other
ROS_FOLDER = "defm_ros.node"  # the ROS layer: the only folder whose modules may import rclpy (message types are data)
RAY_ONLY = {"defm_ros.extract.fleet", "defm_ros.cli.extract"}  # the optional extra: fleet extraction, --ray


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(name: str, modules: set[str]) -> bool:
    return any(m.startswith(name + ".") for m in modules)


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE) -> set[str]:
    """Every module `path` imports, anywhere in the file, resolved to module names."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # `from . import bench`: a submodule
                if f"{target}.{alias.name}" in modules:
                    found.add(f"{target}.{alias.name}")
    return found


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between defm_ros modules, every import of each module)."""
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    everything = {module_name(f): imports_of(f, modules) for f in files}
    edges = {m: {i for i in imps if i in modules and i != m} for m, imps in everything.items()}
    return edges, everything


def layer_of(module: str) -> int:
    rest = module.removeprefix("defm_ros").removeprefix(".")
    top = rest.split(".")[0]
    for rank, (_, names) in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle (one path per strongly connected component of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                  for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))


def test_no_import_cycle():
    edges, _ = import_graph()
    assert cycles(edges) == []


def test_no_upward_import():
    edges, _ = import_graph()
    assert upward(edges) == []


def test_only_the_ros_layer_imports_ros_and_only_fleet_extraction_imports_ray():
    _, everything = import_graph()
    for module, imps in everything.items():
        ros = {i for i in imps if i.split(".")[0] in ("rclpy", "rcl_interfaces", "lifecycle_msgs")}
        if not module.startswith(ROS_FOLDER + "."):
            assert not ros, f"{module} imports {ros}"
        if module not in RAY_ONLY:
            assert not any(i.split(".")[0] == "ray" for i in imps), f"{module} imports ray"


def test_the_applications_do_not_import_each_other():
    edges, _ = import_graph()
    for module, targets in edges.items():
        mine = module.split(".")[1] if "." in module else ""
        if mine in SIBLINGS:
            others = {t for t in targets if t.split(".")[1:2] and t.split(".")[1] in set(SIBLINGS) - {mine}}
            assert not others, f"{module} imports {others}"


def test_every_module_has_a_layer():
    edges, _ = import_graph()
    for module in edges:
        layer_of(module)


@pytest.mark.parametrize(("edges", "expect_cycle", "expect_up"), [
    ({"defm_ros.encoder": {"defm_ros.backends.onnx_backend"}, "defm_ros.backends.onnx_backend": {"defm_ros.encoder"}},
     True, True),
    ({"defm_ros.pca": {"defm_ros.features"}, "defm_ros.features": {"defm_ros.pca"}}, True, False),
    ({"defm_ros.features": {"defm_ros.node.node"}}, False, True),
    ({"defm_ros.node.node": {"defm_ros.features"}, "defm_ros.features": set()}, False, False),
])
def test_the_checks_catch_what_they_are_for(edges, expect_cycle, expect_up):
    """The walk's verdicts on made-up graphs, so that a checker which finds nothing cannot pass silently."""
    assert bool(cycles(edges)) == expect_cycle
    assert bool(upward(edges)) == expect_up


def test_function_level_and_relative_imports_are_seen(tmp_path):
    pkg = tmp_path / "defm_ros" / "backends"
    pkg.mkdir(parents=True)
    src = pkg / "onnx_backend.py"
    src.write_text("import os\n\ndef f():\n    from ..encoder import Encoder\n    from . import graph\n"
                   "    import defm_ros.node.node\n")
    modules = {"defm_ros.encoder", "defm_ros.node.node", "defm_ros.backends.graph", "defm_ros.backends"}
    found = imports_of(src, modules, root=tmp_path / "defm_ros")
    assert {"defm_ros.encoder", "defm_ros.backends.graph", "defm_ros.node.node", "os"} <= found


ROOT_MODULES = 12  # the package root stays a handful of modules: the rest lives in folders, one job each
LONGEST_FUNCTION = 60  # lines


def test_the_root_holds_few_modules():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= ROOT_MODULES, root


def test_no_function_is_longer_than_a_screen():
    functions = [(f, n) for f in sorted(PACKAGE.rglob("*.py")) for n in ast.walk(ast.parse(f.read_text()))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    long = [f"{f.relative_to(PACKAGE)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for f, n in functions if n.end_lineno - n.lineno + 1 > LONGEST_FUNCTION]
    assert functions and long == []
