"""The node's input seam without a ROS graph: topics per modality, stamp pairing, decoding."""

from __future__ import annotations

import numpy as np
import pytest

from defm_ros.inputs import (
    CAMERA_INFO,
    COMPRESSED,
    IMAGE,
    DepthInput,
    RgbdInput,
    ShapeBatches,
    StampPairer,
    camera_inputs,
    cdr_stamp,
    decode_rgbd,
    transport_topic,
)

from .helpers import bags
from .helpers.messages import duck_image


def _serialized_image(sec: int, nanosec: int, big_endian: bool = False) -> bytes:
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    msg = bags.image(ts, sec * 10**9 + nanosec, "cam", "16UC1", np.zeros((1, 2), np.uint16))
    if big_endian:
        return bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/Image", little_endian=False))
    return bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))


@pytest.mark.parametrize("big", [False, True])
def test_cdr_stamp_reads_the_header_without_deserializing(big):
    assert cdr_stamp(_serialized_image(1700000000, 123456789, big)) == 1700000000_123456789
    assert cdr_stamp(memoryview(_serialized_image(5, 0, big))) == 5_000_000_000
    with pytest.raises(ValueError, match="no header"):
        cdr_stamp(b"\x00\x01\x00\x00")


def test_pairs_exact_stamps_and_forgets_what_is_older():
    p = StampPairer(("depth", "color"))
    assert p.put("depth", 100, "d100") is None
    assert p.put("depth", 200, "d200") is None
    assert p.put("color", 200, "c200") == {"depth": "d200", "color": "c200"}  # d100 can never pair now
    assert p.unpaired == 1 and p.paired == 1
    assert p.put("color", 100, "c100") is None  # late and alone: waits, and is pushed out later
    for t in (300, 400, 500, 600):
        assert p.put("depth", t, f"d{t}") is None
    assert p.put("color", 600, "c600") == {"depth": "d600", "color": "c600"}
    assert p.unpaired == 1 + 1 + 3  # c100 (older than c600), d300..d500


def test_pairs_within_a_tolerance_and_picks_the_nearest():
    p = StampPairer(("depth", "color", "camera_info"), tolerance_ns=10)
    p.put("color", 95, "c95")
    p.put("color", 103, "c103")
    p.put("camera_info", 100, "i100")
    assert p.put("depth", 101, "d101") == {"depth": "d101", "color": "c103", "camera_info": "i100"}
    assert p.unpaired == 1  # c95
    assert p.put("depth", 200, "d200") is None and p.put("color", 215, "c215") is None  # 15 ns apart


def test_a_role_that_never_comes_costs_bounded_memory():
    p = StampPairer(("depth", "color"), history=4)
    for t in range(100):
        assert p.put("depth", t, t) is None
    assert p.unpaired == 96 and p.waiting == 4  # the last four still wait for a colour partner


def test_pairing_needs_two_roles():
    with pytest.raises(ValueError, match="two roles"):
        StampPairer(("depth",))


def test_depth_input_topics_and_decoding():
    raw = DepthInput("/cam/depth")
    assert [(t.role, t.name, t.msg_type) for t in raw.topics] == [("depth", "/cam/depth", IMAGE)]
    comp = DepthInput("/cam/depth", "compressedDepth")
    assert [(t.name, t.msg_type) for t in comp.topics] == [("/cam/depth/compressedDepth", COMPRESSED)]
    assert raw.pair("depth", b"serialized") == {"depth": b"serialized"}

    class Msg:
        height, width, encoding, is_bigendian, step = 1, 2, "16UC1", False, 4
        data = np.array([1000, 2500], "<u2").tobytes()

    np.testing.assert_array_equal(raw.decode({"depth": Msg()}, {"depth_scale": 0.001}), [[1.0, 2.5]])
    np.testing.assert_allclose(raw.decode({"depth": Msg()}, {"depth_scale": 0.0001}), [[0.1, 0.25]], rtol=1e-6)
    with pytest.raises(ValueError, match="transport"):
        transport_topic("/cam/depth", "theora")


def test_camera_inputs_from_parameters():
    p = {"cameras": [""], "depth_topic": "~/depth", "camera_depth_topic": "depth", "transport": "raw"}
    resolve = {"~/depth": "/defm_node/depth", "front/depth": "/front/depth", "rear/depth": "/rear/depth"}.get
    (ns, source), = camera_inputs("depth", p, resolve)
    assert ns == "~" and source.topics[0].name == "/defm_node/depth"
    multi = camera_inputs("depth", {**p, "cameras": ["front", "rear"], "transport": "compressedDepth"}, resolve)
    assert [ns for ns, _ in multi] == ["front", "rear"]
    assert [s.topics[0].name for _, s in multi] == ["/front/depth/compressedDepth", "/rear/depth/compressedDepth"]


def test_rgbd_input_pairs_colour_depth_and_camera_info_and_checks_alignment():
    import types

    src = RgbdInput("/cam/aligned_depth", "/cam/color", "/cam/color/camera_info")
    assert [(t.role, t.msg_type) for t in src.topics] == [("depth", IMAGE), ("color", IMAGE),
                                                           ("camera_info", CAMERA_INFO)]
    assert not src.gated  # keep-last-1 in DDS would lose one half of a pair
    assert src.pair("depth", _serialized_image(10, 0)) is None
    assert src.pair("color", _serialized_image(10, 0)) is None
    assert src.pair("color", _serialized_image(11, 0)) is None
    frame = src.pair("camera_info", _serialized_image(10, 0))  # any header-first message pairs by stamp
    assert set(frame) == {"depth", "color", "camera_info"} and src.unpaired == 0

    depth = duck_image(np.full((2, 3), 1500, np.uint16))
    color = duck_image(np.arange(18, dtype=np.uint8).reshape(2, 3, 3), "rgb8")
    x = src.decode({"depth": depth, "color": color, "camera_info": types.SimpleNamespace(height=2, width=3)},
                   {"depth_scale": 0.001})
    assert x.shape == (2, 3, 4) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., :3].reshape(-1), np.arange(18)) and np.testing.assert_allclose(x[..., 3], 1.5)
    small = duck_image(np.zeros((1, 3, 3), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="not aligned .*colour 3x1.*aligned_depth_to_color"):
        src.decode({"depth": depth, "color": small, "camera_info": types.SimpleNamespace(height=2, width=3)},
                   {"depth_scale": 0.001})
    with pytest.raises(ValueError, match="taken raw"):
        RgbdInput("/d", "/c", "/i", transport="compressed")
    p = {"cameras": [""], "depth_topic": "~/depth", "image_topic": "~/image", "camera_info_topic": "~/camera_info",
         "transport": "raw", "pair_tolerance_ms": 2.0, "camera_depth_topic": "d", "camera_image_topic": "c",
         "camera_info_rel_topic": "i"}
    (ns, rgbd), = camera_inputs("rgbd", p, lambda t: t.replace("~", "/n"))
    assert [t.name for t in rgbd.topics] == ["/n/depth", "/n/image", "/n/camera_info"]
    assert rgbd.pairer.tolerance_ns == 2_000_000


def test_rgbd_decode_of_a_pair_without_camera_info():
    """Extraction's form of the one RGB-D decode: a bag's depth + colour pair, refused where the sizes differ."""
    import types

    def image(encoding, h, w, data):
        return types.SimpleNamespace(encoding=encoding, height=h, width=w, step=len(data) // h, is_bigendian=False,
                                     data=data)

    depth = image("16UC1", 2, 3, np.full(6, 1500, "<u2").tobytes())
    x = decode_rgbd(depth, image("rgb8", 2, 3, bytes(range(18))), {"depth_scale": 0.001})
    assert x.shape == (2, 3, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 3], 1.5)
    with pytest.raises(ValueError, match="^colour 3x1 and depth 3x2 are not aligned: .*aligned_depth_to_color"):
        decode_rgbd(depth, image("rgb8", 1, 3, bytes(9)), {"depth_scale": 0.001})


def test_shape_batches_hand_back_full_batches_and_drain_the_rest_in_arrival_order():
    """Extraction's stream: a batch of `size` frames of one shape as soon as it is full; drain() the rest."""
    batches = ShapeBatches(2)
    big, small = np.zeros((4, 6)), np.zeros((2, 3))
    assert batches.add("a", big) is None and batches.add("b", small) is None and batches.queued == 2
    assert batches.add("c", big) == ["a", "c"] and batches.queued == 1
    assert batches.add("d", big) is None
    assert batches.drain() == [["b"], ["d"]] and batches.queued == 0 and batches.drain() == []
    unbounded = ShapeBatches()  # size 0: only drain() hands groups back (the node's take of frames)
    assert all(unbounded.add(k, big) is None for k in range(5)) and unbounded.drain() == [[0, 1, 2, 3, 4]]
