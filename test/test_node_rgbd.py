"""defm_node with refine:=lingbot over real topics: aligned colour + depth + camera_info paired by stamp,
refined depth, its mask and camera_info (and points, while subscribed) published, DeFM run on the refined
depth; unpaired and misaligned frames counted and dropped, never fatal."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from .helpers.checkpoints import write_checkpoint
from .helpers.messages import camera_info, image
from .helpers.rosgraph import diag_values, start_node, stop
from .helpers.scenes import scene

pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from defm_ros.features import from_msg  # noqa: E402
from defm_ros.msgs.points import points_from_msg  # noqa: E402

MODEL, SIZE, TOKENS = "defm_efficientnet_b0", [64, 64], 300


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgbd")
    return write_checkpoint(root / "b0.pth", MODEL), write_checkpoint(root / "model.pt", "lingbot_depth_vitl14")


def _msgs(rgb, mm, k, sec: int):
    depth, color, info = image(mm), image(rgb, "rgb8"), camera_info(k, *rgb.shape[:2])
    for m in (depth, color, info):
        m.header.stamp.sec, m.header.frame_id = sec, "camera_color_optical_frame"
    return depth, color, info


TOPICS = ((Image, "aligned_depth", "~/depth"), (Image, "color", "~/image"), (CameraInfo, "color/info", "~/camera_info"))


def _remaps(ns: str) -> dict:
    """The node's depth, colour and camera_info inputs on a camera's aligned topics under `ns`."""
    return {node_name: f"{ns}/{topic}" for _, topic, node_name in TOPICS}


def _paired_by_stamp(images: list, infos: list) -> list:
    """(image, camera_info) pairs of equal stamps, as message_filters' TimeSynchronizer makes them."""
    by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in infos}
    return [(m, by_stamp.get((m.header.stamp.sec, m.header.stamp.nanosec))) for m in images]


def _publishers(probe, ns: str) -> list:
    """The camera side, reliable as realsense2_camera publishes: depth, colour, camera_info."""
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    return [probe.node.create_publisher(msg_type, f"{ns}/{topic}", qos) for msg_type, topic, _ in TOPICS]


def test_refined_depth_feeds_defm_and_bad_pairs_are_counted(probe, weights, shared_data):
    from defm_ros import Encoder, Refiner

    b0, lingbot = weights
    node = start_node({"model": MODEL, "weights": str(b0), "input_size": SIZE, "refine": "lingbot",
                       "refine_weights": str(lingbot), "refine_tokens": TOKENS, "qos_reliability": "reliable"},
                      _remaps("/rs"))
    pubs = _publishers(probe, "/rs")
    refined = probe.listen(Image, "/defm_node/depth_refined")
    masks = probe.listen(Image, "/defm_node/depth_refined_mask")
    infos = probe.listen(CameraInfo, "/defm_node/depth_refined/camera_info")
    dense = probe.listen(Image, "/defm_node/features/dense")
    info = probe.listen(String, "/defm_node/features/info", latched=True)
    diags = probe.listen(DiagnosticArray, "/diagnostics")
    rgb, mm, k = scene(shared_data, "1")
    try:
        assert probe.wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs), 90), stop(node)[1]
        time.sleep(1.5)
        for p, m in zip(pubs, _msgs(rgb, mm, k, 100), strict=True):  # a good triple
            p.publish(m)
        assert probe.wait_for(lambda: dense and refined and masks, 60), stop(node)[1]
        pubs[0].publish(_msgs(rgb, mm, k, 101)[0])  # depth whose colour never comes: unpaired
        # taken before the next depth comes: a keep-last-1 reader would replace it (then counted in DDS)
        assert probe.wait_for(lambda: diag_values(diags, "/rs/aligned_depth").get("received_frames") == "2", 10)
        bad = _msgs(rgb[::2, ::2].copy(), mm, k, 102)  # colour at half the depth's size: not aligned
        for p, m in zip(pubs, bad, strict=True):
            p.publish(m)
        assert probe.wait_for(lambda: diag_values(diags, "/rs/aligned_depth").get("rejected_frames") == "1", 30)
        for p, m in zip(pubs, _msgs(rgb, mm, k, 103), strict=True):  # and a good triple still works
            p.publish(m)
        assert probe.wait_for(lambda: any(m.header.stamp.sec == 103 for m in dense), 60), stop(node)[1]
        assert probe.wait_for(lambda: (s := diag_values(diags, "/rs/aligned_depth")).get("rejected_frames") == "1"
                              and s.get("published_frames") == "2", 5), diag_values(diags, "/rs/aligned_depth")
        assert int(diag_values(diags, "/rs/aligned_depth")["unpaired_messages"]) >= 1
        assert probe.node.count_publishers("/defm_node/depth_refined/points") == 0  # publish_points is off
        assert node.poll() is None
    finally:
        code, log = stop(node)
    assert "not aligned" in log and "Traceback" not in log, log
    meta = json.loads(info[-1].data)
    assert meta["model"] == MODEL and meta["refined_by"]["model"] == "lingbot_depth_vitl14"
    assert meta["refined_by"]["num_tokens"] == TOKENS
    assert [m.header.stamp.sec for m in dense] == [100, 103] and [m.header.stamp.sec for m in refined] == [100, 103]
    pairs = _paired_by_stamp(refined, infos)  # every refined frame has its camera_info, with an equal header
    assert all(info is not None and info.header == img.header for img, info in pairs), [i for _, i in pairs]
    assert all(info.k.tolist() == k.reshape(-1).tolist() and (info.height, info.width) == (480, 640)
               for _, info in pairs)

    ref = Refiner(weights=lingbot, num_tokens=TOKENS).refine(rgb, mm.astype(np.float32) / 1000)
    got = np.frombuffer(refined[0].data, "<f4").reshape(480, 640)
    assert refined[0].encoding == "32FC1" and masks[0].encoding == "mono8"
    mask = np.frombuffer(masks[0].data, np.uint8).reshape(480, 640) == 255
    np.testing.assert_array_equal(mask, ref.mask.numpy())
    np.testing.assert_allclose(got, ref.depth.numpy(), rtol=1e-4, equal_nan=True)
    enc = Encoder(MODEL, weights=b0, input_size=tuple(SIZE))
    np.testing.assert_allclose(from_msg(dense[0]), enc.encode(ref.depth.numpy()).dense[0].numpy(), atol=1e-4)


def test_points_are_the_refiners_and_computed_only_while_subscribed(probe, weights, shared_data):
    """publish_points:=true: ~/depth_refined/points is the Refiner's `.points` for the camera_info's K, with the
    depth's header; a frame refined while nobody subscribes to it is not back-projected (published_points)."""
    from defm_ros import Refiner

    b0, lingbot = weights
    rgb, mm, k = scene(shared_data, "4")
    node = start_node({"model": MODEL, "weights": str(b0), "input_size": SIZE, "refine": "lingbot",
                       "refine_weights": str(lingbot), "refine_tokens": TOKENS, "qos_reliability": "reliable",
                       "publish_points": True, "pair_tolerance_ms": 5.0}, _remaps("/pc"))
    pubs = _publishers(probe, "/pc")
    refined = probe.listen(Image, "/defm_node/depth_refined")
    infos = probe.listen(CameraInfo, "/defm_node/depth_refined/camera_info")
    diags = probe.listen(DiagnosticArray, "/diagnostics")

    def send(sec: int) -> None:
        depth, color, info = _msgs(rgb, mm, k, sec)
        info.header.stamp.nanosec, info.header.frame_id = 1_000_000, "info_frame"  # paired within the tolerance
        for p, m in zip(pubs, (depth, color, info), strict=True):
            p.publish(m)

    def counted(frames: int) -> dict:
        return probe.wait_for(lambda: diag_values(diags, "/pc/aligned_depth").get("published_frames") == str(frames),
                              60) and diag_values(diags, "/pc/aligned_depth")

    try:
        assert probe.wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs), 90), stop(node)[1]
        time.sleep(1.5)
        send(200)
        assert counted(1), stop(node)[1]
        assert diag_values(diags, "/pc/aligned_depth")["published_points"] == "0"  # nobody listened: none made
        points = probe.listen(PointCloud2, "/defm_node/depth_refined/points")
        assert probe.wait_for(lambda: probe.node.count_publishers("/defm_node/depth_refined/points") == 1, 30)
        for sec in range(201, 206):  # until the node has seen the new subscriber (discovery takes a moment)
            send(sec)
            assert counted(sec - 199), stop(node)[1]
            if points:
                break
        assert points and probe.wait_for(
            lambda: diag_values(diags, "/pc/aligned_depth")["published_points"] == str(len(points)), 10)
    finally:
        code, log = stop(node)
    assert "Traceback" not in log, log
    pairs = _paired_by_stamp(refined, infos)
    assert len(pairs) >= 2 and all(i is not None and i.header == m.header for m, i in pairs)
    assert pairs[0][1].header.frame_id == "camera_color_optical_frame"  # the depth's header, not the info's
    cloud = points[-1]
    assert cloud.header == refined[-1].header and (cloud.height, cloud.width) == (480, 640)
    want = Refiner(weights=lingbot, num_tokens=TOKENS).refine(rgb, mm.astype(np.float32) / 1000, intrinsics=k)
    got = points_from_msg(cloud)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want.points.numpy()))
    np.testing.assert_allclose(got, want.points.numpy(), rtol=0, atol=1e-5, equal_nan=True)


def test_the_rgbd_encoder_as_the_nodes_model(probe, weights, shared_data):
    from defm_ros import Encoder

    _, lingbot = weights
    node = start_node({"model": "lingbot_rgbd_vitl14", "weights": str(lingbot), "input_size": [140, 182],
                       "qos_reliability": "reliable"},
                      _remaps("/f"))
    pubs = _publishers(probe, "/f")
    dense = probe.listen(Image, "/defm_node/features/dense")
    cls = probe.listen(Image, "/defm_node/features/cls")
    info = probe.listen(String, "/defm_node/features/info", latched=True)
    rgb, mm, k = scene(shared_data, "2")
    try:
        assert probe.wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs), 90), stop(node)[1]
        time.sleep(1.5)
        for p, m in zip(pubs, _msgs(rgb, mm, k, 300), strict=True):
            p.publish(m)
        assert probe.wait_for(lambda: any(m.header.stamp.sec == 300 for m in dense) and cls, 60), stop(node)[1]
    finally:
        stop(node)
    meta = json.loads(info[-1].data)
    assert meta["modality"] == "rgbd" and meta["dense_size"] == [10, 13] and meta["dense_channels"] == 384
    want = Encoder("lingbot_rgbd_vitl14", weights=lingbot, input_size=(140, 182)).encode(
        (rgb, mm.astype(np.float32) / 1000))
    msg = next(m for m in dense if m.header.stamp.sec == 300)
    assert msg.encoding == "32FC384" and (msg.height, msg.width) == (10, 13)
    np.testing.assert_allclose(from_msg(msg), want.dense[0].numpy(), atol=1e-4)
