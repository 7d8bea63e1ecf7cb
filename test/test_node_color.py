"""defm_node with a Theia model: colour in over real topics (raw and compressed), SPEC §5 features out,
malformed colour frames rejected and counted, and a transport that carries no colour refused."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from .helpers.checkpoints import write_checkpoint
from .helpers.messages import image
from .helpers.rosgraph import diag_values, start_camera, start_node, stop

pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from defm_ros.features import from_msg  # noqa: E402

MODEL = "theia_tiny"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Seeded weights in Theia's published layout, so that the node and this process hold one model."""
    return write_checkpoint(tmp_path_factory.mktemp("theia") / "model.safetensors", MODEL)


@pytest.mark.parametrize(("encoding", "transport", "topic"), [
    ("rgb8", "raw", "/cam/color/image_raw"),
    ("bgr8", "raw", "/cam/color/image_raw"),
    ("jpeg", "compressed", "/cam/color/image_raw/compressed"),
])
def test_colour_features_carry_headers_and_equal_encode(probe, ckpt, encoding, transport, topic, shared_data):
    from defm_ros import Encoder
    from defm_ros.msgs.color import decode_color

    from .fixtures.camera_publisher import frames

    node = start_node({"model": MODEL, "weights": str(ckpt), "transport": transport},
                      {"~/image": "/cam/color/image_raw"})
    dense = probe.listen(Image, "/defm_node/features/dense")
    cls = probe.listen(Image, "/defm_node/features/cls")
    info = probe.listen(String, "/defm_node/features/info", latched=True)
    dense.clear(), cls.clear()
    cam = start_camera(topic, "--rate", "5", "--count", "8", "--encoding", encoding)
    try:
        assert probe.wait_for(lambda: len(dense) >= 5 and len(cls) >= 5 and info, 60), stop(node)[1]
    finally:
        cam.wait(30)
        code, log = stop(node)
    meta = json.loads(info[-1].data)
    assert meta["model"] == MODEL and meta["modality"] == "color" and "non-commercial" in meta["license"]
    enc = Encoder(MODEL, weights=ckpt)
    rgbs = [decode_color(m) for m in frames(encoding)]
    for d_msg, c_msg in zip(dense, cls, strict=False):
        assert d_msg.header == c_msg.header and d_msg.header.frame_id == "camera_depth_optical_frame"
        assert d_msg.encoding == "32FC192" and (d_msg.height, d_msg.width) == (14, 14)
        want = enc.encode(rgbs[(d_msg.header.stamp.sec - 1000) % len(rgbs)])
        np.testing.assert_allclose(from_msg(d_msg), want.dense[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(from_msg(c_msg).reshape(-1), want.cls[0].numpy(), atol=1e-4)
    assert code == 0, log


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_malformed_colour_frames_are_rejected_and_counted(probe, ckpt, transport):
    from defm_ros.msgs.color import encode_compressed

    base = "/bad/color"
    topic = base if transport == "raw" else f"{base}/compressed"
    node = start_node({"model": MODEL, "weights": str(ckpt), "transport": transport, "qos_reliability": "reliable"},
                      {"~/image": base})
    kind = Image if transport == "raw" else CompressedImage
    pub = probe.node.create_publisher(kind, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    dense = probe.listen(Image, "/defm_node/features/dense")
    diags = probe.listen(DiagnosticArray, "/diagnostics")
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    if transport == "raw":
        good = image(rgb, "rgb8")
        bad = [Image(height=48, width=64, encoding="16UC1", step=128, data=bytes(48 * 128)),  # depth on a colour topic
               Image(height=48, width=64, encoding="mono8", step=64, data=bytes(48 * 64)),
               Image(height=48, width=64, encoding="rgb8", step=192, data=rgb.tobytes()[:-1]),
               Image(height=48, width=64, encoding="rgb8", step=100, data=bytes(4800)),
               Image(height=0, width=64, encoding="rgb8", step=192, data=b"")]
    else:
        fmt, data = encode_compressed(rgb, "jpeg")
        good = CompressedImage(format=fmt, data=data)
        bad = [CompressedImage(format=fmt, data=data[: len(data) // 3]), CompressedImage(format=fmt, data=b""),
               CompressedImage(format="16UC1; compressedDepth png", data=data),
               CompressedImage(format="tiff", data=data), CompressedImage(format=fmt, data=b"garbage" * 50)]
    try:
        assert probe.wait_for(lambda: pub.get_subscription_count() > 0, 60), stop(node)[1]
        time.sleep(1.5)  # the QoS follower settles
        for k, msg in enumerate(bad):
            msg.header.stamp.sec = 100 + k
            pub.publish(msg)
            time.sleep(0.1)
        good.header.stamp.sec = 200
        pub.publish(good)
        assert probe.wait_for(lambda: any(m.header.stamp.sec == 200 for m in dense), 30), stop(node)[1]
        assert probe.wait_for(lambda: diag_values(diags, topic).get("rejected_frames") == str(len(bad)), 5), \
            diag_values(diags, topic)
        assert node.poll() is None
    finally:
        code, log = stop(node)
        probe.node.destroy_publisher(pub)
    assert "rejected frame" in log and "Traceback" not in log, log


def test_a_transport_that_carries_no_colour_is_refused(ckpt):
    node = start_node({"model": MODEL, "weights": str(ckpt), "transport": "compressedDepth"})
    try:
        code = node.wait(60)
    finally:
        _, log = stop(node)
    assert code == 1 and "transport compressedDepth does not carry color" in log, log
