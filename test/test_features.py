"""Feature messages (SPEC §5): self-describing encodings, HWC layout, zero-copy decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from defm_ros.features import FeatureDecodeError, from_msg, to_msg


def test_dense_round_trip_and_layout():
    dense = np.random.default_rng(0).standard_normal((128, 14, 18)).astype(np.float32)
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = to_msg(dense, header)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (14, 18, "32FC128", 18 * 128 * 4)
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    raw = np.frombuffer(msg.data, "<f4").reshape(14, 18, 128)
    assert raw[3, 5, 7] == dense[7, 3, 5]  # pixel (i, j) holds the C-dim feature
    out = from_msg(msg)
    np.testing.assert_array_equal(out, dense)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))  # a view, not a copy
    t = from_msg(msg, as_torch=True)
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(dense))


def test_wide_class_token_beyond_opencv_limit():
    cls = torch.randn(2048)
    msg = to_msg(cls)
    assert (msg.height, msg.width, msg.encoding) == (1, 1, "32FC2048")
    np.testing.assert_array_equal(from_msg(msg).reshape(-1), cls.numpy())


def test_half_precision_and_padding_and_big_endian():
    dense = np.arange(2 * 3 * 4, dtype=np.float32).reshape(4, 2, 3)
    msg = to_msg(dense, dtype=np.float16)
    assert msg.encoding == "16FC4"
    np.testing.assert_array_equal(from_msg(msg), dense.astype(np.float16))
    hwc = dense.transpose(1, 2, 0).astype(">f4")
    rows = np.concatenate([hwc.reshape(2, -1).view(np.uint8), np.zeros((2, 8), np.uint8)], axis=1)
    big = Image(height=2, width=3, encoding="32FC4", is_bigendian=True, step=rows.shape[1], data=rows.tobytes())
    np.testing.assert_array_equal(from_msg(big, layout="hwc"), hwc.astype(np.float32))


@pytest.mark.parametrize(
    "msg, match",
    [
        (Image(height=1, width=1, encoding="16UC1", step=2, data=bytes(2)), "not a feature map"),
        (Image(height=0, width=1, encoding="32FC4", step=16, data=b""), "zero-size"),
        (Image(height=2, width=2, encoding="32FC4", step=16, data=bytes(64)), "shorter than a row"),
        (Image(height=2, width=2, encoding="32FC4", step=32, data=bytes(60)), "60 bytes"),
        (Image(height=1, width=1, encoding="32FC0", step=0, data=b""), "channel count"),
    ],
)
def test_malformed_feature_messages(msg, match):
    with pytest.raises(FeatureDecodeError, match=match):
        from_msg(msg)


def test_as_torch_says_when_it_had_to_import_torch():
    """A policy's first callback must not pay torch's import silently: from_msg warns when it did."""
    import subprocess
    import sys

    code = ("import warnings, numpy as np\n"
            "from defm_ros.features import from_msg, to_msg\n"
            "msg = to_msg(np.zeros((4, 2, 3), np.float32))\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    from_msg(msg, as_torch=True)\n"
            "    from_msg(msg, as_torch=True)\n"
            "print(len(w), w[0].message if w else '')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    count, text = out.stdout.split(" ", 1)
    assert count == "1" and "imported torch" in text and "import torch at start-up" in text


def test_refined_messages_with_camera_info_and_points():
    """The refined depth's camera_info is the input's with the depth's header (the input is left as it was);
    its points are an organised cloud with that header; each keyed by its topic below the camera."""
    from sensor_msgs.msg import CameraInfo

    from defm_ros.features import REFINED_INFO, REFINED_POINTS, refined_msgs
    from defm_ros.msgs.points import points_from_msg

    header = Header(frame_id="depth_frame")
    header.stamp.sec, header.stamp.nanosec = 5, 6
    info = CameraInfo(header=Header(frame_id="info_frame"), height=2, width=3, k=[2.0, 0, 1, 0, 2.0, 1, 0, 0, 1])
    depth, mask = np.array([[1.0, np.nan, 2.0], [3.0, 4.0, 5.0]], np.float32), np.ones((2, 3), bool)
    points = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
    msgs = refined_msgs(header, depth, mask)
    assert set(msgs) == {"depth_refined", "depth_refined_mask"}
    msgs = refined_msgs(header, depth, mask, info, points)
    assert set(msgs) == {"depth_refined", "depth_refined_mask", REFINED_INFO, REFINED_POINTS}
    assert REFINED_INFO == "depth_refined/camera_info" and REFINED_POINTS == "depth_refined/points"
    assert msgs[REFINED_INFO].header == header and msgs[REFINED_INFO].k.tolist() == info.k.tolist()
    assert info.header.frame_id == "info_frame"  # not changed in place
    assert msgs[REFINED_POINTS].header == header
    np.testing.assert_array_equal(points_from_msg(msgs[REFINED_POINTS]), points)
