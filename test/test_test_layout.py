"""Tests share code through test/helpers only: no test module imports another, a bench imports no test code (it
runs where the tests are not), and only helpers.rosgraph needs rclpy to import. An ast walk, no import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = sorted((ROOT / "test").rglob("*.py"))
ROS = ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "builtin_interfaces", "rosgraph_msgs")


def imports(path: Path, top_level: bool = False) -> set[str]:
    """The modules `path` imports (relative ones resolved from its package); `top_level`: those run at import."""
    package = path.relative_to(ROOT).parent.parts
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in (tree.body if top_level else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from . import test_x`: a module
    return found


@pytest.mark.parametrize("path", TESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_test_module_imports_another(path):
    others = {m for m in imports(path) if m.startswith("test.") and m.split(".")[1].startswith(("test_", "conftest"))}
    assert not others, f"{path.name} imports {others}: shared code belongs in test/helpers"


@pytest.mark.parametrize("path", sorted((ROOT / "bench").glob("*.py")), ids=lambda p: p.name)
def test_no_bench_imports_test_code(path):
    tests = {m for m in imports(path) if m == "test" or m.startswith("test.")}
    assert not tests, f"bench/{path.name} imports {tests}: a bench writes what it needs itself or uses defm_ros"


@pytest.mark.parametrize("path", sorted((ROOT / "test" / "helpers").glob("*.py")), ids=lambda p: p.name)
def test_only_rosgraph_needs_ros_to_import(path):
    ros = {m for m in imports(path, top_level=True) if m.split(".")[0] in ROS}
    assert path.name == "rosgraph.py" or not ros, f"helpers/{path.name} imports {ros} at import: import on use"
