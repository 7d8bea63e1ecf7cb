from __future__ import annotations

import pytest

from defm_ros.sample_data import data_root


@pytest.fixture(scope="session")
def shared_data():
    root = data_root()
    if root is None:
        pytest.skip("shared depth data not found (set DEFM_ROS_DATA or keep ../shared/data beside the clone)")
    return root


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never reach the network: the Hub is treated as offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def ros_domain():
    """Real rclpy in this process, on a domain of its own so parallel runs don't cross-talk."""
    import os

    rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
    os.environ["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 200)
    rclpy.init()
    yield os.environ["ROS_DOMAIN_ID"]
    rclpy.shutdown()


@pytest.fixture
def probe(ros_domain):
    """A test-side node recording topics, spun in the background (test.helpers.rosgraph.Probe)."""
    from .helpers.rosgraph import Probe

    p = Probe()
    yield p
    p.close()
