"""defm_node under real-size streams: lossless transport, drop-don't-queue, multi-camera, sim time."""

from __future__ import annotations

import time

import numpy as np
import pytest

from .helpers.checkpoints import write_checkpoint
from .helpers.messages import image
from .helpers.rosgraph import FIXTURES, NODE, ROOT, diag_values, start_camera, start_node, stop

pytestmark = [pytest.mark.ros, pytest.mark.slow]

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from defm_ros.features import from_msg  # noqa: E402

PROFILE = {"FASTRTPS_DEFAULT_PROFILES_FILE": str(ROOT / "config" / "fastdds_large_data.xml")}
FAST = {"model": "defm_efficientnet_b0", "weights": "random", "input_size": [160, 160]}


def _run_stream(probe, topic, camera_args, camera_env=None, node_params=None, count=150, entry=NODE):
    node = start_node({**FAST, **(node_params or {})}, {"~/depth": topic}, entry=entry)
    dense = probe.listen(Image, "/defm_node/features/dense")
    dense.clear()  # a repeated run must not count an earlier run's outputs
    diags = probe.listen(DiagnosticArray, "/diagnostics")
    try:
        assert probe.wait_for(lambda: diag_values(diags, topic), 60), "node did not come up"
        cam = start_camera(topic, "--count", str(count), *camera_args, extra_env=camera_env)
        assert cam.wait(90) == 0
        time.sleep(1.5)
    finally:
        code, log = stop(node)
    return {m.header.stamp.sec for m in dense}, diag_values(diags, topic), log


@pytest.mark.parametrize("qos, env", [("reliable", None), ("best_effort", PROFILE)],
                         ids=["reliable", "best_effort+profile"])
def test_no_frame_lost_in_transport_at_30hz(probe, qos, env, shared_data):
    """640x480 16UC1 at 30 Hz; a small input size and one torch thread keep the model ahead of the camera
    even when other processes share the two cores (two OpenMP threads stall when one core is taken).

    Transport is checked strictly on every attempt (frames received by the node). Whether every
    received frame also comes out depends on the 2-core machine being otherwise idle, so that part
    gets a second attempt when a busy machine made the node fall behind (it then drops, as it should).
    """
    for attempt in range(2):
        stamps, diag, log = _run_stream(probe, f"/t_{qos}{attempt}/depth", ["--rate", "30", "--qos", qos], env,
                                        node_params={"input_size": [64, 64], "threads": 1})
        assert int(diag["received_frames"]) >= 0.95 * 150, diag
        if len(stamps) >= 0.95 * 150:
            return
    assert len(stamps) >= 0.95 * 150, (len(stamps), diag, log)


@pytest.mark.parametrize("qos, env", [("reliable", None), ("best_effort", PROFILE)],
                         ids=["reliable", "best_effort+profile"])
def test_a_camera_that_starts_after_the_node_loses_no_first_frame(probe, qos, env, shared_data):
    """The camera publishes its first 614 KB frame the moment it matches the node: the node already
    holds a subscription of the camera's reliability, and settling on it later drops nothing. (Best
    effort promises no frame, so there only the match and the settling are checked.)"""
    stamps, diag, log = _run_stream(probe, f"/t_first_{qos}/depth", ["--rate", "5", "--qos", qos, "--settle", "0"],
                                    env, count=15)
    if qos == "reliable":
        assert stamps == set(range(1000, 1015)), (sorted(stamps), log)
        assert int(diag["received_frames"]) == 15, diag
    else:
        assert len(stamps) >= 12 and int(diag["received_frames"]) >= 12, (sorted(stamps), diag)
    assert diag["input_reliability"] == qos, diag
    assert f"following its publishers, {qos} only" in log


def test_best_effort_publisher_without_profile_still_connects(probe):
    """A best-effort camera (no large-data profile) is matched and served. Its 614 KB frames mostly do
    not arrive (SPEC §6), so this camera sends small ones: what is tested is the match, not Fast DDS."""
    import numpy as np
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    topic = "/t_be/depth"
    node = start_node(FAST, {"~/depth": topic})
    dense = probe.listen(Image, "/defm_node/features/dense")
    diags = probe.listen(DiagnosticArray, "/diagnostics")
    pub = probe.node.create_publisher(Image, topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    mm = np.full((48, 64), 1500, np.uint16)
    frame = image(mm)
    try:
        assert probe.wait_for(lambda: pub.get_subscription_count() > 0, 60), "no subscription matched"
        for k in range(40):
            frame.header.stamp.sec = 1000 + k
            pub.publish(frame)
            time.sleep(0.1)
        assert probe.wait_for(lambda: len(dense) >= 10, 10), stop(node)[1]
    finally:
        code, log = stop(node)
        probe.node.destroy_publisher(pub)
    assert diag_values(diags, topic)["input_reliability"] == "best_effort"


def test_best_effort_subscriber_receives_large_dense_maps(probe, shared_data):
    """A ViT-S dense map at 224x308 is 540 KB; the node's own large-data profile gets it across."""
    topic = "/t_vit/depth"
    node = start_node({"model": "defm_vit_s14", "weights": "random", "input_size": [224, 308]}, {"~/depth": topic})
    be = probe.listen(Image, "/defm_node/features/dense", reliable=False)
    diags = probe.listen(DiagnosticArray, "/diagnostics")
    try:
        assert probe.wait_for(lambda: diag_values(diags, topic), 60)
        cam = start_camera(topic, "--count", "40", "--rate", "5")
        assert cam.wait(60) == 0
        time.sleep(2.5)
    finally:
        stop(node)
    published = int(diag_values(diags, topic)["published_frames"])
    assert published >= 20
    assert be and be[0].encoding == "32FC384" and len(be[0].data) == 16 * 22 * 384 * 4
    assert len(be) >= 0.95 * published


@pytest.mark.parametrize("rclpy_kind", ["message_info", "humble"])
def test_overload_drops_instead_of_queueing(probe, rclpy_kind, shared_data):
    """Frames arrive faster than the model runs: only the newest is processed; latency stays bounded.

    "humble": the node as on an rclpy whose callbacks get no message info (the publisher's sequence
    numbers): its input gate stays open, so every frame is taken and the node counts the replaced ones.
    """
    humble = rclpy_kind == "humble"
    topic = f"/t_over_{rclpy_kind}/depth"
    stamps, diag, log = _run_stream(probe, topic, ["--rate", "30"],
                                    node_params={"model": "defm_resnet50", "input_size": [320, 320]}, count=90,
                                    entry=(str(FIXTURES / "node_without_message_info.py"),) if humble else NODE)
    dropped, published = int(diag["dropped_frames"]), int(diag["published_frames"])
    assert dropped > 0 and published < 90, diag
    assert published + dropped >= 85, (diag, log)  # everything that arrived was either processed or counted
    if humble:
        # nothing can be left in DDS uncounted: the gate never closed, each frame was taken and counted
        assert int(diag["dropped_frames_in_dds"]) == 0, diag
        received = int(diag["received_frames"])
        assert received - 1 <= published + dropped <= received, diag  # at most one frame in inference
    else:
        # frames that arrived during inference stayed in DDS (the input gate) and were counted from the
        # publisher's sequence numbers, without ever being taken into the node
        assert int(diag["dropped_frames_in_dds"]) > 0, diag
    # the forward pass is most of the node's latency; the rest (decode, publish) is small
    assert 0 < float(diag["inference_ms_median"]) <= float(diag["latency_receive_to_publish_ms_median"]), diag
    p95, median = float(diag["latency_receive_to_publish_ms_p95"]), float(diag["latency_receive_to_publish_ms_median"])
    period = 1000.0 / max(float(diag["output_rate_hz"]), 1e-3)
    assert p95 <= 2.0 * period, diag  # a queue would grow latency without bound; newest-only keeps it ~1 pass
    assert median > 0


def test_multi_camera_batched_per_camera_outputs(probe, tmp_path, shared_data):
    from defm_ros import Encoder
    from defm_ros.msgs.depth import decode_depth

    from .fixtures.camera_publisher import frames

    ckpt = write_checkpoint(tmp_path / "b0.pth", "defm_efficientnet_b0")
    cams = ["front", "rear", "left"]
    # The fixture cameras are not synchronised (5 Hz, random phase): a wide window lets them batch.
    node = start_node({**FAST, "weights": str(ckpt), "cameras": cams, "batch_window_ms": 150.0})
    outs = {c: probe.listen(Image, f"/{c}/features/dense") for c in cams}
    diags = probe.listen(DiagnosticArray, "/diagnostics")
    try:
        assert probe.wait_for(lambda: diag_values(diags, "/front/depth"), 60)
        procs = [start_camera(f"/{c}/depth", "--count", "20", "--rate", "5", "--offset", str(i))
                 for i, c in enumerate(cams)]
        assert all(p.wait(60) == 0 for p in procs)
        time.sleep(1.5)
    finally:
        stop(node)
    enc = Encoder("defm_efficientnet_b0", weights=str(ckpt), input_size=(160, 160))
    depths = [decode_depth(m) for m in frames("16UC1")]
    for i, cam in enumerate(cams):
        assert len(outs[cam]) >= 18, (cam, len(outs[cam]))
        for msg in outs[cam][:3]:
            want = enc.encode(depths[(msg.header.stamp.sec - 1000 + i) % len(depths)]).dense[0].numpy()
            np.testing.assert_allclose(from_msg(msg), want, atol=1e-4)
    assert float(diag_values(diags, "/front/depth")["mean_batch_size"]) > 1.5


def test_sim_time_replay_keeps_input_stamps(probe, shared_data):
    clock_pub = probe.node.create_publisher(Clock, "/clock", 10)
    clock = Clock()
    clock.clock.sec = 1005
    timer = probe.node.create_timer(0.05, lambda: clock_pub.publish(clock))
    stamps, diag, log = _run_stream(probe, "/t_sim/depth", ["--rate", "10"], node_params={"use_sim_time": True},
                                    count=20)
    probe.node.destroy_timer(timer)
    assert stamps and stamps <= set(range(1000, 1020)), stamps
    # stamp -> publish latency is measured on the simulated clock: 1005 - (1000 + k) seconds
    assert abs(float(diag["latency_stamp_to_publish_ms_median"])) < 20000
