"""defm_node's rclpy adapters: message types, raw subscriptions and their input gate, the output
publishers and their QoS, diagnostics messages, and main()'s rclpy start-up and shutdown.

Kept apart from node.py so that the node reads as the wiring of parameters, topics and the core;
everything here is the same for any node built on that core.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import CallbackGroup
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.serialization import deserialize_message
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String

from ..features import REFINED_INFO, REFINED_POINTS
from .diagnostics import Status
from .runner import Parts, run

# rclpy >= Iron hands subscription callbacks the message info (publication sequence numbers); Humble does not.
MESSAGE_INFO = hasattr(Subscription, "CallbackType")
MSG_TYPES = {"Image": Image, "CompressedImage": CompressedImage, "CameraInfo": CameraInfo}
POLICY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}


class InferenceGate(CallbackGroup):
    """One camera's subscription group, closed while the node runs inference.

    The executor leaves a closed group's subscriptions out of its wait set, so frames that arrive during
    inference stay in DDS (keep last 1: the newest survives) and are never taken, copied or handed to
    Python. On two cores, taking every 614 KB frame at 30 Hz slowed the forward pass by 10-20 %.
    Only closed while the publisher's sequence numbers count what DDS overwrites (SequenceGaps).
    """

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def can_execute(self, entity) -> bool:
        return not self.closed

    def beginning_execution(self, entity) -> bool:
        return True  # a frame the executor already chose is taken; closing only affects the next wait

    def ending_execution(self, entity) -> None:
        pass


def deserialize(raw: bytes, msg_type: str) -> Any:
    return deserialize_message(raw, MSG_TYPES[msg_type])


def subscribe_raw(node: Any, msg_type: str, topic: str, reliability: str, group: CallbackGroup,
                  callback: Callable[[bytes, dict | None], None]) -> Subscription:
    """Keep-last-1 subscription to serialized messages; `callback(raw, message info or None)`.

    raw=True: the executor only copies the bytes; frames that are dropped are never deserialized, and the
    one that is processed is deserialized on the inference thread.
    """
    handler = (lambda m, info: callback(m, info)) if MESSAGE_INFO else (lambda m: callback(m, None))
    return node.create_subscription(MSG_TYPES[msg_type], topic, handler,
                                    QoSProfile(depth=1, reliability=POLICY[reliability]), raw=True,
                                    callback_group=group)


def camera_publishers(node: Any, ns: str, refined: bool, points: bool = False) -> dict[str, Any]:
    """One camera's lifecycle publishers (SPEC §5): features, PCA preview, latched info; refined depth, its
    mask and camera_info (`refined`) and points (`points`), keyed by topic below `ns` (features.refined_msgs)."""
    out_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    overridable = {"qos_overriding_options": QoSOverridingOptions.with_default_policies()}
    pub = node.create_lifecycle_publisher
    pubs = {"dense": pub(Image, f"{ns}/features/dense", out_qos, **overridable),
            "cls": pub(Image, f"{ns}/features/cls", out_qos, **overridable),
            "pca": pub(Image, f"{ns}/features/pca", out_qos),
            "info": pub(String, f"{ns}/features/info", latched)}
    if refined:
        pubs["depth_refined"] = pub(Image, f"{ns}/depth_refined", out_qos, **overridable)
        pubs["depth_refined_mask"] = pub(Image, f"{ns}/depth_refined_mask", out_qos)
        pubs[REFINED_INFO] = pub(CameraInfo, f"{ns}/{REFINED_INFO}", out_qos, **overridable)
    if refined and points:
        pubs[REFINED_POINTS] = pub(PointCloud2, f"{ns}/{REFINED_POINTS}", out_qos, **overridable)
    return pubs


def info_msg(info: dict[str, Any]) -> String:
    return String(data=json.dumps(info, indent=1, sort_keys=True))


def diagnostic_array(statuses: list[Status], stamp: Any) -> DiagnosticArray:
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = [DiagnosticStatus(level=bytes([st.level]), name=st.name, message=st.message,
                                   hardware_id=st.hardware_id,
                                   values=[KeyValue(key=k, value=v) for k, v in st.values.items()])
                  for st in statuses]
    return arr


def main(make_node: Callable[[], Any], args: list[str] | None, usage: str) -> int:
    """Run a node built by `make_node` the runner's way: the executor on a thread, `node.work` here.

    The node provides autostart(), work(), loop.stop(), stopping() and release().
    """
    argv = sys.argv[1:] if args is None else args
    if {"-h", "--help"} & set(argv[: argv.index("--ros-args")] if "--ros-args" in argv else argv):
        print(usage)
        return 0
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from .dds_profile import apply_large_data_profile

    profile = apply_large_data_profile()
    rclpy.init(args=args)

    def build() -> Parts:
        node = make_node()
        if profile:
            node.get_logger().info(f"Fast DDS large-data profile: {profile}")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        return Parts(spin=executor.spin, start=node.autostart, work=node.work, stop=node.loop.stop,
                     stopping=node.stopping, stop_executor=lambda: executor.shutdown(timeout_sec=1.0),
                     destroy=lambda: (node.release(), node.destroy_node()))

    def finish() -> None:
        if rclpy.ok():
            rclpy.shutdown()
        else:  # a signal shut the context down: still stop rclpy's signal-handling thread
            from rclpy.signals import uninstall_signal_handlers

            uninstall_signal_handlers()

    code = run(build, ok=rclpy.ok, quiet=(ExternalShutdownException,), finish=finish)
    # The process is about to exit: spare the interpreter's final garbage collection over torch's
    # objects (~1.5 s on a small CPU), so that SIGINT/SIGTERM end the node well within 2 s.
    gc.freeze()
    return code
