"""Helpers for real-rclpy process tests: start defm_node in its own process, probe its topics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NODE = ("-m", "defm_ros.node")  # how start_node runs the node; a test may run a fixture script instead
CAMERA = ("-m", "test.fixtures.camera_publisher")  # a module, so that it finds the helpers it builds frames with


def ros_env() -> dict:
    return dict(os.environ)


def start_node(params: dict, remaps: dict | None = None, extra_env: dict | None = None,
               entry: tuple[str, ...] = NODE) -> subprocess.Popen:
    cmd = [sys.executable, *entry, "--ros-args"]
    for k, v in params.items():
        if isinstance(v, list):
            v = "[" + ",".join(f"'{x}'" if isinstance(x, str) else str(x) for x in v) + "]"
        elif isinstance(v, bool):
            v = str(v).lower()
        cmd += ["-p", f"{k}:={v}"]
    for k, v in (remaps or {}).items():
        cmd += ["-r", f"{k}:={v}"]
    env = ros_env()
    env.update(extra_env or {})
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_camera(topic: str, *args: str, extra_env: dict | None = None) -> subprocess.Popen:
    """The fixture camera plays the shared real frames: without them, the calling test skips (says why)."""
    from defm_ros.sample_data import data_root

    if data_root() is None:
        pytest.skip("the fixture camera plays ../shared/data/rgbd_examples, which is not here "
                    "(set DEFM_ROS_DATA or keep ../shared/data beside the clone)")
    env = ros_env()
    env.update(extra_env or {})
    return subprocess.Popen([sys.executable, *CAMERA, topic, *args], cwd=ROOT, env=env)


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> tuple[int, str]:
    """SIGINT, then SIGKILL after `timeout`. Generous: late in a full suite a node's exit has taken over
    5 s (its exit time is test_hardening's to assert: within 2 s on a quiet machine)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = proc.stdout.read() if proc.stdout else ""
    return proc.returncode, out


def diag_values(diags: list, suffix: str) -> dict:
    """The key/values of the newest diagnostic status whose name ends in `suffix` ({} if none yet)."""
    for arr in reversed(list(diags)):
        for s in arr.status:
            if s.name.endswith(suffix):
                return {kv.key: kv.value for kv in s.values}
    return {}


class Probe:
    """A test-side node that records messages on topics, spun in a background thread."""

    def __init__(self, name: str = "probe") -> None:
        self.node = rclpy.create_node(name)
        self.received: dict[tuple, list] = {}
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop:
            self.executor.spin_once(timeout_sec=0.05)

    def listen(self, msg_type, topic: str, reliable: bool = True, latched: bool = False) -> list:
        """The list that collects `topic`'s messages. One subscription per topic and QoS for the probe's
        whole life: listening again returns the same list, so no message is recorded twice and the
        probe does not pile up readers (each one a writer's node must serve and acknowledge)."""
        key = (topic, msg_type, reliable, latched)
        if key not in self.received:
            qos = QoSProfile(depth=100,
                             reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            self.received[key] = []
            self.node.create_subscription(msg_type, topic, self.received[key].append, qos)
        return self.received[key]

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.node.destroy_node()
