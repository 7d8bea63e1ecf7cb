"""The organised PointCloud2 codec (msgs.points) on real sensor_msgs and rosbags classes, no rclpy node needed:
layout (fields, offsets, steps), NaN where invalid, round trips, malformed clouds refused; camera matrices."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header

from defm_ros.msgs.points import PointsDecodeError, camera_matrix, points_from_msg, points_msg

rng = np.random.default_rng(0)
POINTS = rng.normal(size=(3, 5, 3)).astype(np.float32)
POINTS[1, 2] = np.nan  # an invalid pixel: all three coordinates NaN


def test_layout_is_organised_xyz_float32_little_endian():
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 7, 9
    msg = points_msg(header, POINTS)
    assert isinstance(msg, PointCloud2) and msg.header == header
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (3, 5, 12, 60)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1)]
    assert msg.is_bigendian is False and msg.is_dense is False  # it holds NaN
    raw = np.frombuffer(bytes(msg.data), "<f4").reshape(3, 5, 3)
    np.testing.assert_array_equal(raw, POINTS)  # pixel (i, j) is point i * width + j
    assert np.isnan(raw[1, 2]).all()
    assert points_msg(header, np.ones((2, 2, 3))).is_dense is True


def test_round_trip_keeps_every_value_and_nan():
    np.testing.assert_array_equal(points_from_msg(points_msg(Header(), POINTS)), POINTS)


def test_rosbags_classes_serialize_and_read_back():
    """The feature bag's typestore classes: the message serializes as rosbags writes it, and reads back."""
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    cloud, field = ts.types["sensor_msgs/msg/PointCloud2"], ts.types["sensor_msgs/msg/PointField"]
    header = ts.types["std_msgs/msg/Header"](stamp=ts.types["builtin_interfaces/msg/Time"](sec=1, nanosec=2),
                                             frame_id="cam")
    raw = ts.serialize_cdr(points_msg(header, POINTS, cloud, field), cloud.__msgtype__)
    back = ts.deserialize_cdr(raw, cloud.__msgtype__)
    assert back.header.frame_id == "cam" and (back.height, back.width) == (3, 5)
    np.testing.assert_array_equal(points_from_msg(back), POINTS)


def test_padded_big_endian_clouds_with_more_fields_decode():
    """Other producers' layouts: a padded point (x, y, z, rgb at 16 bytes), row padding, big-endian."""
    h, w = POINTS.shape[:2]
    rec = np.zeros((h, w + 1, 4), ">f4")
    rec[:, :w, :3] = POINTS
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in
              enumerate(("x", "y", "z", "rgb"))]
    msg = PointCloud2(height=h, width=w, fields=fields, is_bigendian=True, point_step=16, row_step=16 * (w + 1),
                      data=rec.tobytes())
    np.testing.assert_array_equal(points_from_msg(msg), POINTS)


@pytest.mark.parametrize(("change", "says"), [
    ({"fields": []}, "no float32 field(s) ['x', 'y', 'z']"),
    ({"data": bytes(12)}, "not 12 bytes of data"),
    ({"point_step": 8}, "points of 8 bytes"),
    ({"row_step": 12}, "rows of 12"),
])
def test_malformed_clouds_are_refused_with_the_reason(change, says):
    msg = points_msg(Header(), POINTS)
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(PointsDecodeError, match=re.escape(says)):
        points_from_msg(msg)


def test_points_must_be_h_w_3():
    with pytest.raises(ValueError, match=r"points must be \(H, W, 3\)"):
        points_msg(Header(), np.zeros((4, 3)))


def test_camera_matrix_of_a_camera_info():
    k = [600.0, 0.0, 320.5, 0.0, 601.0, 240.5, 0.0, 0.0, 1.0]
    np.testing.assert_array_equal(camera_matrix(CameraInfo(k=k)), np.reshape(k, (3, 3)))
    with pytest.raises(ValueError, match="is the camera calibrated"):
        camera_matrix(CameraInfo())  # an uncalibrated driver publishes K = 0
