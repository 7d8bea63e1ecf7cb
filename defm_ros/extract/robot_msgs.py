"""The robot's state and command messages that extraction reads into `observation.state` and `action`: one
table, message type -> how to read it as a vector of floats and what each element is called."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

XYZ, XYZW = ("x", "y", "z"), ("x", "y", "z", "w")


@dataclass(frozen=True)
class VectorReader:
    """`values(msg)`: the message as floats; `names(msg)`: a name per value (the same for every message of a
    topic, except JointState's, which carry their own)."""

    values: Callable[[Any], list[float]]
    names: Callable[[Any], list[str]]


def _vec(v: Any, axes: tuple[str, ...] = XYZ) -> list[float]:
    return [float(getattr(v, a)) for a in axes]


def _twist(t: Any) -> list[float]:
    return _vec(t.linear) + _vec(t.angular)


def _named(*groups: tuple[str, tuple[str, ...]]) -> Callable[[Any], list[str]]:
    names = [f"{g}.{a}" for g, axes in groups for a in axes]
    return lambda msg: list(names)


def _joint_positions(msg: Any) -> list[float]:
    if len(msg.position) == 0:
        raise ValueError("a JointState without positions")
    return [float(p) for p in msg.position]


def _array(msg: Any) -> list[float]:
    return [float(x) for x in msg.data]


_TWIST_NAMES = _named(("linear", XYZ), ("angular", XYZ))
_ARRAY = VectorReader(_array, lambda msg: [f"data.{i}" for i in range(len(msg.data))])

READERS: dict[str, VectorReader] = {
    "sensor_msgs/msg/JointState": VectorReader(_joint_positions, lambda msg: [str(n) for n in msg.name]),
    "std_msgs/msg/Float32MultiArray": _ARRAY,
    "std_msgs/msg/Float64MultiArray": _ARRAY,
    "geometry_msgs/msg/Twist": VectorReader(_twist, _TWIST_NAMES),
    "geometry_msgs/msg/TwistStamped": VectorReader(lambda m: _twist(m.twist), _TWIST_NAMES),
    "nav_msgs/msg/Odometry": VectorReader(
        lambda m: _vec(m.pose.pose.position) + _vec(m.pose.pose.orientation, XYZW) + _twist(m.twist.twist),
        _named(("position", XYZ), ("orientation", XYZW), ("linear", XYZ), ("angular", XYZ))),
}


def reader_for(topic: str, msgtype: str) -> VectorReader:
    """The reader of a state/action topic's type; ValueError (a usage error) for a type not in READERS."""
    if msgtype not in READERS:
        raise ValueError(f"{topic} is a {msgtype}; state and action topics must be one of {sorted(READERS)}")
    return READERS[msgtype]


def message_time(msg: Any, log_time: int) -> int:
    """When a sample holds: its header stamp where the message has a header, else the bag's log time (ns)."""
    header = getattr(msg, "header", None)
    if header is None:
        return log_time
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
