"""The state and command messages read into observation.state and action (extract/robot_msgs.py), as rosbags
deserializes them from a bag."""

from __future__ import annotations

import numpy as np
import pytest

from defm_ros.extract.robot_msgs import READERS, message_time, reader_for

rosbags = pytest.importorskip("rosbags")


@pytest.fixture(scope="module")
def ts():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def _header(ts, sec: int, nanosec: int):
    return ts.types["std_msgs/msg/Header"](stamp=ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                          frame_id="base")


def _twist(ts, v):
    V = ts.types["geometry_msgs/msg/Vector3"]
    return ts.types["geometry_msgs/msg/Twist"](linear=V(x=v[0], y=v[1], z=v[2]), angular=V(x=v[3], y=v[4], z=v[5]))


def _odometry(ts, v):
    P, Q = ts.types["geometry_msgs/msg/Point"], ts.types["geometry_msgs/msg/Quaternion"]
    pose = ts.types["geometry_msgs/msg/PoseWithCovariance"](
        pose=ts.types["geometry_msgs/msg/Pose"](position=P(x=v[0], y=v[1], z=v[2]),
                                                orientation=Q(x=v[3], y=v[4], z=v[5], w=v[6])),
        covariance=np.zeros(36))
    twist = ts.types["geometry_msgs/msg/TwistWithCovariance"](twist=_twist(ts, v[7:]), covariance=np.zeros(36))
    return ts.types["nav_msgs/msg/Odometry"](header=_header(ts, 1, 5), child_frame_id="base_link", pose=pose,
                                             twist=twist)


TWIST = ["linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z"]
CASES = {  # type -> (message from values, number of values, names)
    "sensor_msgs/msg/JointState": (lambda ts, v: ts.types["sensor_msgs/msg/JointState"](
        header=_header(ts, 1, 5), name=["a", "b", "c"], position=v, velocity=np.zeros(0), effort=np.zeros(0)), 3,
        ["a", "b", "c"]),
    "std_msgs/msg/Float32MultiArray": (lambda ts, v: ts.types["std_msgs/msg/Float32MultiArray"](
        layout=ts.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=v.astype(np.float32)), 4,
        ["data.0", "data.1", "data.2", "data.3"]),
    "std_msgs/msg/Float64MultiArray": (lambda ts, v: ts.types["std_msgs/msg/Float64MultiArray"](
        layout=ts.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=v), 2, ["data.0", "data.1"]),
    "geometry_msgs/msg/Twist": (_twist, 6, TWIST),
    "geometry_msgs/msg/TwistStamped": (lambda ts, v: ts.types["geometry_msgs/msg/TwistStamped"](
        header=_header(ts, 1, 5), twist=_twist(ts, v)), 6, TWIST),
    "nav_msgs/msg/Odometry": (_odometry, 13, [f"position.{a}" for a in "xyz"] + [f"orientation.{a}" for a in "xyzw"]
                              + TWIST),
}


def test_every_reader_is_tested():
    assert set(CASES) == set(READERS)


@pytest.mark.parametrize("msgtype", sorted(CASES))
def test_each_type_reads_its_values_in_order_with_names_after_a_bag_round_trip(ts, msgtype):
    make, n, names = CASES[msgtype]
    values = np.random.default_rng(0).normal(size=n)
    msg = make(ts, values)
    msg = ts.deserialize_cdr(ts.serialize_cdr(msg, msgtype), msgtype)  # as a bag hands it over
    reader = reader_for("/t", msgtype)
    want = values.astype(np.float32) if "Float32" in msgtype else values
    np.testing.assert_allclose(reader.values(msg), want, rtol=1e-6)
    assert reader.names(msg) == names
    assert message_time(msg, 999) == (999 if msgtype.endswith(("Twist", "MultiArray")) else 1_000_000_005)


def test_another_type_and_a_jointstate_without_positions_are_refused(ts):
    with pytest.raises(ValueError, match="/cam is a sensor_msgs/msg/Image; state and action topics must be one of"):
        reader_for("/cam", "sensor_msgs/msg/Image")
    empty = CASES["sensor_msgs/msg/JointState"][0](ts, np.zeros(0))
    with pytest.raises(ValueError, match="without positions"):
        reader_for("/j", "sensor_msgs/msg/JointState").values(empty)
