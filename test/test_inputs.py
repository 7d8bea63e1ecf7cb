"""The node's input seam without a ROS graph: topics per modality, stamp pairing, decoding."""

from __future__ import annotations

import numpy as np
import pytest

from defm_ros.inputs import COMPRESSED, IMAGE, DepthInput, StampPairer, camera_inputs, cdr_stamp, transport_topic


def _serialized_image(sec: int, nanosec: int, big_endian: bool = False) -> bytes:
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    Image, Header, Time = (ts.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                 "builtin_interfaces/msg/Time"))
    msg = Image(header=Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id="cam"), height=1, width=2,
                encoding="16UC1", is_bigendian=0, step=4, data=np.zeros(4, np.uint8))
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
    assert p.unpaired == 96 and len(p._pending["depth"]) == 4


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
    (prefix, source), = camera_inputs("depth", p, resolve)
    assert prefix == "~/features" and source.topics[0].name == "/defm_node/depth"
    multi = camera_inputs("depth", {**p, "cameras": ["front", "rear"], "transport": "compressedDepth"}, resolve)
    assert [pre for pre, _ in multi] == ["front/features", "rear/features"]
    assert [s.topics[0].name for _, s in multi] == ["/front/depth/compressedDepth", "/rear/depth/compressedDepth"]
