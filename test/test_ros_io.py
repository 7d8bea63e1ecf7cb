"""The node's rclpy adapters on a real rclpy context: raw subscriptions behind an input gate, the
output publishers, diagnostics messages and main()'s --help."""

from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import LifecycleNode  # noqa: E402
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from defm_ros.node import ros_io  # noqa: E402
from defm_ros.node.diagnostics import WARN, Status  # noqa: E402


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


def _spin_until(executor, done, timeout=5.0) -> None:
    end = time.monotonic() + timeout
    while not done() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)


def test_raw_subscription_hands_over_bytes_and_the_gate_holds_them_back(context):
    node = rclpy.create_node("ros_io_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    got = []
    gate = ros_io.InferenceGate()
    ros_io.subscribe_raw(node, "Image", "/ros_io_test/depth", "reliable", gate,
                         lambda raw, info: got.append((raw, info)))
    pub = node.create_publisher(Image, "/ros_io_test/depth", 10)
    msg = Image(height=1, width=2, encoding="16UC1", step=4, data=bytes(range(4)))
    _spin_until(executor, lambda: pub.get_subscription_count() == 1)
    gate.closed = True
    pub.publish(msg)
    _spin_until(executor, lambda: bool(got), timeout=0.5)
    assert got == []  # closed: the message stays in DDS
    gate.closed = False
    _spin_until(executor, lambda: bool(got))
    raw, info = got[0]
    assert isinstance(raw, bytes) and ros_io.deserialize(raw, "Image") == msg  # CDR padding bytes may differ
    if ros_io.MESSAGE_INFO:
        assert info["publication_sequence_number"] >= 1
    else:
        assert info is None
    node.destroy_node()


@pytest.mark.parametrize(("refined", "points"), [(False, False), (True, False), (True, True)])
def test_camera_publishers(context, refined, points):
    """Every publisher is keyed by its topic below the camera's namespace (features.refined_msgs' keys)."""
    node = LifecycleNode("ros_io_pubs", context=context)
    pubs = ros_io.camera_publishers(node, "/cam", refined=refined, points=points)
    want = {kind: f"/cam/features/{kind}" for kind in ("dense", "cls", "pca", "info")}
    if refined:
        want.update({k: f"/cam/{k}" for k in ("depth_refined", "depth_refined_mask", "depth_refined/camera_info")})
    if points:
        want["depth_refined/points"] = "/cam/depth_refined/points"
    assert {kind: pub.topic_name for kind, pub in pubs.items()} == want
    assert pubs["info"].qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL  # latched for late subscribers
    assert pubs["dense"].qos_profile.reliability == ReliabilityPolicy.RELIABLE
    node.destroy_node()


def test_diagnostic_array_carries_every_field():
    arr = ros_io.diagnostic_array([Status(WARN, "defm_node: /cam", "no input yet", "cpu", {"a": "1", "b": "x"})],
                                  stamp=rclpy.time.Time(seconds=3).to_msg())
    (st,) = arr.status
    assert arr.header.stamp.sec == 3 and st.level == bytes([WARN]) and st.name == "defm_node: /cam"
    assert st.message == "no input yet" and st.hardware_id == "cpu"
    assert [(kv.key, kv.value) for kv in st.values] == [("a", "1"), ("b", "x")]


def test_help_prints_usage_without_starting_rclpy(capsys):
    assert ros_io.main(lambda: pytest.fail("no node is built for --help"), ["--help"], "usage: x") == 0
    assert capsys.readouterr().out == "usage: x\n"
