"""defm_node: depth images in, DeFM dense features and class tokens out (SPEC §5, §6).

The only module that imports rclpy. Callbacks only park the newest message per camera; one loop
decodes, batches across cameras, runs the encoder and publishes, so inference never blocks
parameters, diagnostics or other cameras, and stale frames are dropped (and counted), never queued.
The executor spins in a background thread and inference runs on the main thread: torch's OpenMP
pool ran the same forward pass up to 2x slower from a secondary thread on a 2-core CPU. While a batch
is in inference the depth subscriptions leave the executor's wait set (InferenceGate), so frames that
arrive meanwhile cost no CPU here; DDS keeps the newest (bench/RESULTS.md, node design).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import CallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.serialization import deserialize_message
from rclpy.subscription import Subscription
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from .dds_profile import apply_large_data_profile
from .depth_codecs import DepthDecodeError, decode_depth
from .features import to_msg
from .node_params import PARAMS, RUNTIME, check_value, descriptor
from .pipeline import LatestFrames, SequenceGaps, StreamStats, group_by_shape

# Testing aid (never set on a robot): inference raises for frames whose header.frame_id equals this
# value, so that the failure path (failed_frames, the next frame still works) is exercised live.
FAULT_ENV = "DEFM_ROS_FAIL_FRAME_ID"
# rclpy >= Iron hands subscription callbacks the message info (publication sequence numbers); Humble does not.
MESSAGE_INFO = hasattr(Subscription, "CallbackType")
RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}

class InferenceGate(CallbackGroup):
    """One camera's depth subscription group, closed while the node runs inference.

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


class DefmNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("defm_node", **kwargs)
        for name, (default, _, _) in PARAMS.items():
            self.declare_parameter(name, default, descriptor(name))
        p = {name: self.get_parameter(name).value for name in PARAMS}
        problems = [msg for name, value in p.items() if (msg := check_value(name, value))]
        if p["stale_warn_s"] >= p["stale_error_s"]:
            problems.append("stale_warn_s must be smaller than stale_error_s")
        if problems:
            raise ValueError("invalid parameters: " + "; ".join(problems))
        self.p = p
        self.add_on_set_parameters_callback(self._on_set_parameters)

        from .encoder import Encoder  # torch is imported only once parameters are known to be valid

        if p["threads"] > 0:
            import torch

            torch.set_num_threads(p["threads"])  # this (main) thread runs inference

        self.encoder = Encoder(
            p["model"], weights=p["weights"] or None, backend=p["backend"], device=p["device"],
            input_size=tuple(p["input_size"]), precision=p["precision"], dense_level=p["dense_level"],
            depth_mode=p["depth_mode"])
        info = self.encoder.info
        for w in info["warnings"]:
            self.get_logger().warn(w)

        cameras = [c for c in p["cameras"] if c]
        bases = [f"{c}/{p['camera_depth_topic']}" for c in cameras] or [p["depth_topic"]]
        # Resolve (and remap) the base topic first: image_transport appends the transport after remapping.
        self.inputs = [self.resolve_topic_name(t) for t in bases]
        prefixes = [f"{c}/features" for c in cameras] or ["~/features"]
        self.msg_type = CompressedImage if p["transport"] == "compressedDepth" else Image
        if p["transport"] == "compressedDepth":
            self.inputs = [f"{t}/compressedDepth" for t in self.inputs]

        out_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        overrides = QoSOverridingOptions.with_default_policies()
        self.pub_dense, self.pub_cls, self.pub_pca = [], [], []
        self.info_json = String(data=self.encoder.info_obj.to_json())
        for prefix in prefixes:
            self.pub_dense.append(self.create_publisher(Image, f"{prefix}/dense", out_qos,
                                                        qos_overriding_options=overrides))
            self.pub_cls.append(self.create_publisher(Image, f"{prefix}/cls", out_qos,
                                                      qos_overriding_options=overrides))
            self.pub_pca.append(self.create_publisher(Image, f"{prefix}/pca", out_qos))
            self.create_publisher(String, f"{prefix}/info", latched).publish(self.info_json)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.frames = LatestFrames(len(self.inputs))
        self.gates = [InferenceGate() for _ in self.inputs]
        self.sequences = [SequenceGaps() for _ in self.inputs]
        self.batch_sizes: deque[int] = deque(maxlen=256)
        self.inference_s: deque[float] = deque(maxlen=256)  # per batch: Encoder.encode to numpy
        self.stats = [StreamStats() for _ in self.inputs]
        self.subs: list = [None] * len(self.inputs)
        self.sub_reliability: list = [None] * len(self.inputs)
        self._follow_publishers()
        # Wall-clock timers: with use_sim_time a paused bag must not stop diagnostics or QoS following.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0, self._follow_publishers, clock=steady)
        self.create_timer(1.0, self._publish_diagnostics, clock=steady)

        self._fail_frame_id = os.environ.get(FAULT_ENV) or None
        self._stop = threading.Event()
        self.get_logger().info(
            f"{info['model']} on {info['device']} ({info['backend']}, {info['precision']}), input "
            f"{info['input_size']}, dense {info['dense_channels']}x{info['dense_size']} stride {info['stride']}; "
            f"listening on {', '.join(self.resolve_topic_name(t) for t in self.inputs)}")

    # --- parameters -------------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name not in PARAMS:
                continue
            if param.name not in RUNTIME:
                return SetParametersResult(successful=False, reason=f"{param.name} is fixed at start-up; restart")
            if (why := check_value(param.name, param.value)) is not None:
                return SetParametersResult(successful=False, reason=why)
        for param in params:
            if param.name in PARAMS:
                self.p[param.name] = param.value
        return SetParametersResult(successful=True)

    # --- input ------------------------------------------------------------------------------------
    def _wanted_reliability(self, topic: str, current):
        """Follow the publishers, like ros2 bag: reliable only when every publisher offers it."""
        forced = self.p["qos_reliability"]
        if forced != "auto":
            return RELIABILITY[forced]
        offers = [i.qos_profile.reliability for i in self.get_publishers_info_by_topic(self.resolve_topic_name(topic))]
        if not offers:
            return current or ReliabilityPolicy.BEST_EFFORT  # best effort matches any publisher that appears
        if all(o == ReliabilityPolicy.RELIABLE for o in offers):
            return ReliabilityPolicy.RELIABLE
        return ReliabilityPolicy.BEST_EFFORT

    def _follow_publishers(self) -> None:
        for i, topic in enumerate(self.inputs):
            want = self._wanted_reliability(topic, self.sub_reliability[i])
            if want == self.sub_reliability[i]:
                continue
            if self.subs[i] is not None:
                self.destroy_subscription(self.subs[i])
            qos = QoSProfile(depth=1, reliability=want)
            # raw=True: the executor only copies the serialized bytes; frames that are dropped are never
            # deserialized, and the one that is processed is deserialized on the inference thread.
            if MESSAGE_INFO:
                callback = lambda m, info, i=i: self._on_depth(i, m, info)  # noqa: E731
            else:
                callback = lambda m, i=i: self._on_depth(i, m, None)  # noqa: E731
            self.subs[i] = self.create_subscription(self.msg_type, topic, callback, qos, raw=True,
                                                    callback_group=self.gates[i])
            self.sub_reliability[i] = want
            self.get_logger().info(f"subscribed to {self.resolve_topic_name(topic)} ({want.name.lower()}, keep last 1)")

    def _on_depth(self, camera: int, msg, info: dict | None) -> None:
        now = time.monotonic()
        seq = info.get("publication_sequence_number") if info else None
        if seq is not None and self.count_publishers(self.inputs[camera]) != 1:
            seq = None  # several publishers' numbers interleave
        self.stats[camera].on_input(now, self.sequences[camera].observe(seq))
        self.frames.put(camera, msg, now)

    # --- inference loop -------------------------------------------------------------------------
    def work(self) -> None:
        """Process the newest frames until shutdown (call from the main thread; see module docstring)."""
        while not self._stop.is_set() and self.context.ok():
            frames = self.frames.take(timeout=0.1, window=self.p["batch_window_ms"] / 1000.0)
            if not frames:
                continue
            gated = [g for g, s in zip(self.gates, self.sequences, strict=True) if s.last is not None]
            for g in gated:
                g.closed = True
            try:
                self._process(frames)
            finally:
                for g in gated:
                    g.closed = False
                if gated and self.executor is not None:
                    self.executor.wake()  # rebuild the wait set with the subscriptions back in

    def _process(self, frames) -> None:
        """Decode, batch, encode and publish one take of frames; failures cost frames, never the node."""
        decoded = []
        for f in frames:
            try:
                f.msg = deserialize_message(f.msg, self.msg_type)
                decoded.append((f, decode_depth(f.msg, self.p["depth_scale"])))
            except Exception as exc:  # DepthDecodeError; anything else is a codec bug, still not fatal
                self.stats[f.camera].rejected += 1
                why = exc if isinstance(exc, DepthDecodeError) else f"{type(exc).__name__}: {exc}"
                self.get_logger().warn(f"rejected frame on {self.inputs[f.camera]}: {why}",
                                       throttle_duration_sec=2.0)
        for group in group_by_shape(decoded):
            self.batch_sizes.append(len(group))
            try:
                self._encode_and_publish(group)
            except Exception as exc:
                if self.stopping():
                    return  # SIGINT/SIGTERM invalidate the context (and publishers) before spin returns
                for f, _ in group:
                    self.stats[f.camera].errors += 1
                self.get_logger().error(f"publishing failed: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=2.0)

    def _encode_and_publish(self, group) -> None:
        import numpy as np

        try:
            if self._fail_frame_id is not None and any(f.msg.header.frame_id == self._fail_frame_id for f, _ in group):
                raise RuntimeError(f"injected fault ({FAULT_ENV}={self._fail_frame_id})")
            start = time.perf_counter()
            feats = self.encoder.encode(np.stack([d for _, d in group]))
            cls, dense = feats.numpy()
            self.inference_s.append(time.perf_counter() - start)
        except Exception as exc:  # a backend fault (e.g. CUDA OOM) costs this batch, not the node
            for f, _ in group:
                self.stats[f.camera].errors += 1
            self.get_logger().error(f"inference failed, frame dropped: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=2.0)
            return
        dtype = np.float16 if self.p["output_dtype"] == "float16" else np.float32
        for k, (f, depth) in enumerate(group):
            header = f.msg.header
            self.pub_dense[f.camera].publish(to_msg(dense[k], header, dtype=dtype))
            self.pub_cls[f.camera].publish(to_msg(cls[k], header, dtype=dtype))
            if self.p["publish_pca"]:
                self._publish_pca(f.camera, dense[k], depth.shape, header)
            now = time.monotonic()
            stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
            clock = self.get_clock().now().nanoseconds * 1e-9
            self.stats[f.camera].on_output(now, now - f.received, clock - stamp)

    def _publish_pca(self, camera: int, dense, shape, header) -> None:
        from .pca import pca_rgb

        rgb = pca_rgb(dense, out_size=shape)
        self.pub_pca[camera].publish(Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                                           step=rgb.shape[1] * 3, data=rgb.tobytes()))

    # --- diagnostics ------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        info = self.encoder.info
        for i, topic in enumerate(self.inputs):
            s = self.stats[i]
            stale = s.staleness(now)
            level, message = DiagnosticStatus.OK, "ok"
            if stale is None:
                level, message = DiagnosticStatus.WARN, "no input yet"
            elif stale > self.p["stale_error_s"]:
                level, message = DiagnosticStatus.ERROR, f"input stale for {stale:.1f} s"
            elif stale > self.p["stale_warn_s"]:
                level, message = DiagnosticStatus.WARN, f"input stale for {stale:.1f} s"
            if info["random_weights"]:
                level, message = max(level, DiagnosticStatus.WARN), message + "; RANDOM WEIGHTS"
            recv_med, recv_p95 = s.percentiles(s.latency_recv)
            stamp_med, stamp_p95 = s.percentiles(s.latency_stamp)
            infer_med, infer_p95 = s.percentiles(self.inference_s)
            values = {
                "input_rate_hz": f"{s.rate(s.received, now):.2f}",
                "output_rate_hz": f"{s.rate(s.published, now):.2f}",
                "latency_receive_to_publish_ms_median": f"{recv_med * 1e3:.1f}",
                "latency_receive_to_publish_ms_p95": f"{recv_p95 * 1e3:.1f}",
                "latency_stamp_to_publish_ms_median": f"{stamp_med * 1e3:.1f}",
                "latency_stamp_to_publish_ms_p95": f"{stamp_p95 * 1e3:.1f}",
                "inference_ms_median": f"{infer_med * 1e3:.1f}",  # all cameras' batches
                "inference_ms_p95": f"{infer_p95 * 1e3:.1f}",
                "received_frames": str(s.total_in),
                "dropped_frames": str(self.frames.dropped[i] + self.sequences[i].dropped),
                "dropped_frames_in_dds": str(self.sequences[i].dropped),  # never taken: arrived during inference
                "rejected_frames": str(s.rejected),
                "failed_frames": str(s.errors),
                "published_frames": str(s.total_out),
                "mean_batch_size": f"{sum(self.batch_sizes) / max(len(self.batch_sizes), 1):.2f}",
                "backend": info["backend"],
                "device": info["device"],
                "model": info["model"],
                "input_reliability": self.sub_reliability[i].name.lower() if self.sub_reliability[i] else "none",
            }
            arr.status.append(DiagnosticStatus(
                level=level, name=f"defm_node: {self.resolve_topic_name(topic)}", message=message,
                hardware_id=info["device"], values=[KeyValue(key=k, value=v) for k, v in values.items()]))
        self.pub_diag.publish(arr)

    def stopping(self, grace: float = 0.5) -> bool:
        """Whether a failure belongs to a shutdown in progress: a signal invalidates the context a
        moment before the executor stops, so give the executor `grace` seconds to say so."""
        return self._stop.wait(grace) or not self.context.ok()

    def shutdown(self) -> None:
        self._stop.set()
        self.frames.wake()


def main(args: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    profile = apply_large_data_profile()
    rclpy.init(args=args)
    node = executor = spinner = None
    failures: list[Exception] = []
    code = 0
    try:
        node = DefmNode()
        if profile:
            node.get_logger().info(f"Fast DDS large-data profile: {profile}")
        executor = SingleThreadedExecutor()
        executor.add_node(node)

        def spin() -> None:
            try:
                executor.spin()
            except Exception as exc:  # ExternalShutdownException, or an RCLError racing SIGINT/SIGTERM's shutdown
                if rclpy.ok():
                    failures.append(exc)
            finally:
                node.shutdown()  # a stopped executor ends work()

        spinner = threading.Thread(target=spin, name="defm_executor", daemon=True)
        spinner.start()
        node.work()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # a start-up failure: say why and exit non-zero before publishing anything
        if node.stopping() if node is not None else not rclpy.ok():  # SIGINT/SIGTERM shut the context down
            print(f"defm_node: ignored during shutdown: {type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            print(f"defm_node: fatal: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 1
    finally:
        if node is not None:
            node.shutdown()
        if executor is not None:
            try:
                executor.shutdown(timeout_sec=1.0)
            except Exception:  # the context may already be gone; the spinner ends either way
                pass
        if spinner is not None:
            spinner.join(2.0)  # never leave rclpy's C++ running in a thread while the process exits
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        else:  # a signal shut the context down: still stop rclpy's signal-handling thread
            from rclpy.signals import uninstall_signal_handlers

            uninstall_signal_handlers()
    for exc in failures:
        print(f"defm_node: fatal: executor failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    # The process is about to exit: spare the interpreter's final garbage collection over torch's
    # objects (~1.5 s on a small CPU), so that SIGINT/SIGTERM end the node well within 2 s.
    import gc

    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
