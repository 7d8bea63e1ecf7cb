"""The README's robot recipe as written: a checkpoint put in src/defm_ros/models before a plain
(non-symlink) `colcon build` is found by the node run from the install space, and the install space
holds what `ros2 run` and `ros2 launch` look for."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers.checkpoints import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MODEL = "defm_regnet_y_400mf"
SKIP = shutil.ignore_patterns(".git", ".venv*", "build", "install", "log", "demo_out", "__pycache__", "*.egg-info",
                              ".pytest_cache", ".ruff_cache", ".hypothesis")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        pytest.fail("colcon is not installed (requirements-dev.txt has colcon-common-extensions)")
    ws = tmp_path_factory.mktemp("ws")
    src = ws / "src" / "defm_ros"
    shutil.copytree(ROOT, src, ignore=SKIP)
    for f in (src / "models").iterdir():  # only what the recipe puts there
        if f.name != "README.md":
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    write_checkpoint(src / "models" / f"{MODEL}.pth", MODEL, seed=None)  # the recipe's download
    out = subprocess.run([str(colcon), "build", "--packages-select", "defm_ros"], cwd=ws, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return ws


def test_install_space_has_what_ros2_run_and_launch_use(workspace):
    share, lib = workspace / "install/defm_ros/share/defm_ros", workspace / "install/defm_ros/lib/defm_ros"
    assert (share / "package.xml").is_file()
    launch = sorted(p.name for p in (ROOT / "launch").glob("*.launch.py"))
    assert launch and sorted(p.name for p in (share / "launch").iterdir()) == launch
    assert (share / "config" / "realsense.yaml").is_file()
    for script in ("defm_node", "defm-ros"):  # ros2 run defm_ros defm_node / defm-ros
        assert os.access(lib / script, os.X_OK), script
    assert (share / "models" / f"{MODEL}.pth").is_file() and not (share / "models" / f"{MODEL}.pth").is_symlink()


def _install_env(ws: Path) -> dict:
    """What `source install/setup.bash` adds for a Python package: its site-packages first."""
    site = next((ws / "install/defm_ros/lib").glob("python3.*/site-packages"))
    env = {k: v for k, v in os.environ.items() if k != "DEFM_ROS_MODELS"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["AMENT_PREFIX_PATH"] = str(ws / "install/defm_ros")
    env["HF_HUB_OFFLINE"] = "1"  # found locally, never downloaded
    return env


def test_installed_node_finds_the_checkpoint_the_readme_puts_in_src_models(workspace, tmp_path):
    node = subprocess.Popen([str(workspace / "install/defm_ros/lib/defm_ros/defm_node"), "--ros-args",
                             "-p", f"model:={MODEL}", "-p", "input_size:=[64,64]"], cwd=tmp_path,
                            env=_install_env(workspace), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], time.monotonic() + 90
    try:
        while time.monotonic() < deadline and (line := node.stdout.readline()):
            lines.append(line)
            if "listening on" in line:
                break
    finally:
        node.terminate()
        node.wait(10)
    log = "".join(lines)
    assert "listening on" in log, log
    installed = workspace / "install/defm_ros/share/defm_ros/models" / f"{MODEL}.pth"
    assert f"weights {installed}" in log, log


def test_installed_node_help_lists_parameters_without_starting(workspace):
    out = subprocess.run([str(workspace / "install/defm_ros/lib/defm_ros/defm_node"), "--help"],
                         env=_install_env(workspace), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage: defm_node" in out.stdout
    assert "qos_reliability" in out.stdout and "autostart" in out.stdout and "[INFO]" not in out.stdout
