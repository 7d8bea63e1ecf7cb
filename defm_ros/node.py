"""defm_node: a lifecycle node; images in, dense features and class tokens out (SPEC §5, §6): depth for
DeFM models, colour for Theia models (inputs.py).

The only module that imports rclpy: it wires parameters, QoS, subscriptions and publishers to the core.
- configure: check the parameters, load the weights strictly (on the CPU), create the publishers;
- activate: build the device backend, publish ~/features/info, subscribe;
- deactivate: stop taking frames, finish the batch in flight, free the device memory;
- cleanup, shutdown: free everything. `autostart` (default true) configures and activates at start-up.
Callbacks only park the newest frame per camera; the main thread's loop (work) decodes, batches,
encodes and publishes them (pipeline.Processor), so stale frames are dropped and counted, never queued.
runner.py has the thread and signal choreography; inputs.py what each modality subscribes to.
"""

from __future__ import annotations

import json
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import CallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.serialization import deserialize_message
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from .diagnostics import StreamCounters, node_status, stream_status
from .features import feature_msgs, refined_msgs
from .inputs import camera_inputs
from .node_params import PARAMS, RUNTIME, check_all, descriptor, input_modality, refusal, usage
from .pipeline import Camera, InferenceLoop, LatestFrames, Processor
from .reliability import Handover, follow_publishers
from .runner import Parts, forward_logs, run

# rclpy >= Iron hands subscription callbacks the message info (publication sequence numbers); Humble does not.
MESSAGE_INFO = hasattr(Subscription, "CallbackType")
MSG_TYPES = {"Image": Image, "CompressedImage": CompressedImage, "CameraInfo": CameraInfo}
POLICY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
OK = TransitionCallbackReturn.SUCCESS


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


class DefmNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        self.state = "unconfigured"
        super().__init__("defm_node", **kwargs)
        for name, (default, _, _) in PARAMS.items():
            self.declare_parameter(name, default, descriptor(name))
        self.p = {name: self.get_parameter(name).value for name in PARAMS}
        self.add_on_set_parameters_callback(self._on_set_parameters)
        forward_logs(self.get_logger())
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Wall-clock timers: with use_sim_time a paused bag must not stop diagnostics or QoS following.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        # Often: until a new camera's publisher is followed, the node holds a reliable and a best-effort
        # reader, and the second copy of each 614 KB frame costs the reliable reader frames.
        self.create_timer(0.1, self._follow_publishers, clock=steady)
        self.create_timer(1.0, self._publish_diagnostics, clock=steady)
        self.encoder, self.refiner, self.cameras, self.frames, self.processor = None, None, [], None, None
        self.failure: Exception | None = None  # why the last transition failed
        self.loop = InferenceLoop(wake=lambda: self.executor is not None and self.executor.wake())
        self._threads = 0

    # --- lifecycle --------------------------------------------------------------------------------
    def _transition(self, name: str, step, undo) -> TransitionCallbackReturn:
        try:
            step()
        except Exception as exc:  # a missing checkpoint, CUDA unavailable with strict_device, ...
            self.failure = exc
            self.get_logger().error(f"{name} failed: {type(exc).__name__}: {exc}")
            undo()
            return TransitionCallbackReturn.FAILURE
        self.failure = None
        return OK

    def on_configure(self, state) -> TransitionCallbackReturn:
        return self._transition("configure", self._configure, self._release)

    def _configure(self) -> None:
        from .encoder import Encoder  # torch is imported only once parameters are known to be valid
        from .models.checkpoints import CheckpointError

        CheckpointError.syntax = staticmethod(lambda name: f"{name}:=FILE")  # errors name the node's parameters

        p = {name: self.get_parameter(name).value for name in PARAMS}
        if problems := check_all(p):
            raise ValueError("invalid parameters: " + "; ".join(problems))
        self.p = p
        self.encoder = Encoder(p["model"], weights=p["weights"] or None, backend=p["backend"], device=p["device"],
                               input_size=tuple(p["input_size"]) if any(p["input_size"]) else None,
                               precision=p["precision"],
                               dense_level=p["dense_level"], depth_mode=p["depth_mode"], strict=p["strict_device"],
                               lazy=True)
        if p["refine"] != "none":
            from .refiner import Refiner

            self.refiner = Refiner(p["refine_model"], weights=p["refine_weights"] or None, device=p["device"],
                                   precision=p["precision"], num_tokens=p["refine_tokens"],
                                   strict=p["strict_device"], lazy=True)
        out_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        overrides = QoSOverridingOptions.with_default_policies()
        pub = self.create_lifecycle_publisher
        for ns, source in camera_inputs(input_modality(p), p, self.resolve_topic_name):
            pubs = {"dense": pub(Image, f"{ns}/features/dense", out_qos, qos_overriding_options=overrides),
                    "cls": pub(Image, f"{ns}/features/cls", out_qos, qos_overriding_options=overrides),
                    "pca": pub(Image, f"{ns}/features/pca", out_qos),
                    "info": pub(String, f"{ns}/features/info", latched)}
            if self.refiner is not None:
                pubs["depth_refined"] = pub(Image, f"{ns}/depth_refined", out_qos, qos_overriding_options=overrides)
                pubs["depth_refined_mask"] = pub(Image, f"{ns}/depth_refined_mask", out_qos)
            self.cameras.append(Camera(source, pubs, InferenceGate()))
        self.frames = LatestFrames(len(self.cameras))
        log = self.get_logger()
        self.processor = Processor(self.encoder, [c.source for c in self.cameras], [c.stats for c in self.cameras],
                                   deserialize_message_by_name, self._publish,
                                   warn=lambda m: log.warn(m, throttle_duration_sec=2.0),
                                   error=lambda m: log.error(m, throttle_duration_sec=2.0), stopping=self.stopping,
                                   stage=self._refine if self.refiner is not None else None)
        self.state = "inactive"

    def on_activate(self, state) -> TransitionCallbackReturn:
        return self._transition("activate", lambda: self._activate(state), self._deactivate)

    def _activate(self, state) -> None:
        self.encoder.open()
        if self.refiner is not None:
            self.refiner.open()
        super().on_activate(state)  # enables the lifecycle publishers
        info = String(data=json.dumps({**self.encoder.info, "refined_by": self.refiner.info if self.refiner else None},
                                      indent=1, sort_keys=True))
        for c in self.cameras:
            c.pubs["info"].publish(info)
        self.state = "active"
        self.loop.resume(self.frames, self.processor, self.cameras)
        self._follow_publishers()
        i = self.encoder.info
        self.get_logger().info(
            f"{i['model']} on {i['device']} ({i['backend']}, {i['precision']}), input {i['input_size']}, dense "
            f"{i['dense_channels']}x{i['dense_size']} stride {i['stride']}, weights {i['weights']}; listening on "
            + ", ".join(t.name for c in self.cameras for t in c.source.topics))

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._deactivate()
        return super().on_deactivate(state)

    def _deactivate(self) -> None:
        """Stop taking frames, let the batch in flight finish (and publish), free the device memory."""
        for c in self.cameras:
            for subs in c.subs.values():
                for sub in subs.clear():
                    self.destroy_subscription(sub)
        self.loop.pause()
        for model in (self.encoder, self.refiner):
            if model is not None:
                model.close()
        if self.state == "active":
            self.state = "inactive"

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return OK

    on_shutdown = on_error = on_cleanup  # error processing frees everything too, back to unconfigured

    def _release(self) -> None:
        self._deactivate()
        for c in self.cameras:
            for pub in c.pubs.values():
                self.destroy_lifecycle_publisher(pub)
        self.encoder, self.refiner, self.cameras, self.frames, self.processor = None, None, [], None, None
        self.state = "unconfigured"

    def autostart(self) -> None:
        """`autostart:=true`: configure and activate now; a failure ends the process (runner)."""
        if not self.p["autostart"]:
            return
        for trigger in (self.trigger_configure, self.trigger_activate):
            if trigger() != OK:
                raise self.failure or RuntimeError("lifecycle transition failed")

    # --- parameters -------------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = [(p.name, p.value) for p in params if p.name in PARAMS]
        if why := refusal(changes, self.state, self.get_fully_qualified_name()):
            return SetParametersResult(successful=False, reason=why)
        self.p.update((name, value) for name, value in changes if name in RUNTIME)
        return SetParametersResult(successful=True)

    # --- input ------------------------------------------------------------------------------------
    def _follow_publishers(self) -> None:
        """(Re)subscribe each input topic with the reliability its publishers call for (reliability.py);
        a subscription no longer wanted goes once its replacement has matched every publisher."""
        if self.state != "active":
            return
        for i, c in enumerate(self.cameras):
            for t in c.source.topics:
                offers = [o.qos_profile.reliability.name.lower() for o in self.get_publishers_info_by_topic(t.name)]
                subs = c.subs.setdefault(t.role, Handover())
                for want in subs.plan(follow_publishers(self.p["qos_reliability"], offers, subs.wanted)):
                    subs.add(want, self._subscribe(i, t, want))
                    self.get_logger().info(f"subscribed to {t.name} ({want}, keep last 1)")
                if retired := subs.retire(lambda sub, n=len(offers): sub.get_publisher_count() >= n):
                    for old in retired:
                        self.destroy_subscription(old)
                    self.get_logger().info(f"{t.name}: following its publishers, {subs.reliability} only")

    def _subscribe(self, camera: int, topic, reliability: str) -> Subscription:
        # raw=True: the executor only copies the serialized bytes; frames that are dropped are never
        # deserialized, and the one that is processed is deserialized on the inference thread.
        if MESSAGE_INFO:
            callback = lambda m, info: self._on_message(camera, topic.role, m, info)  # noqa: E731
        else:
            callback = lambda m: self._on_message(camera, topic.role, m, None)  # noqa: E731
        return self.create_subscription(MSG_TYPES[topic.msg_type], topic.name, callback,
                                        QoSProfile(depth=1, reliability=POLICY[reliability]), raw=True,
                                        callback_group=self.cameras[camera].gate)

    def _on_message(self, camera: int, role: str, msg, info: dict | None) -> None:
        if self.state != "active":
            return  # taken just before deactivate removed the subscription
        now, c = time.monotonic(), self.cameras[camera]
        if c.subs[role].taken(info, msg):
            return  # the other copy, during a reliability handover
        seq = info.get("publication_sequence_number") if info else None
        if seq is not None and self.count_publishers(c.source.topics[0].name) != 1:
            seq = None  # several publishers' numbers interleave
        if (frame := c.arrived(role, msg, seq, now)) is not None:
            self.frames.put(camera, frame, now)

    # --- inference -------------------------------------------------------------------------------
    def work(self) -> None:
        """Process the newest frames until shutdown (call from the main thread; see module docstring)."""
        self.loop.run(lambda: self.p, self.context.ok, self._set_threads)

    def _set_threads(self) -> None:
        if self.p["threads"] > 0 and self._threads != self.p["threads"]:
            import torch

            torch.set_num_threads(self.p["threads"])  # this (main) thread runs inference
            self._threads = self.p["threads"]

    def _publish(self, frame, header, cls, dense, model_input) -> None:
        pca = model_input.shape[:2] if self.p["publish_pca"] else None
        msgs = feature_msgs(header, cls, dense, self.p["output_dtype"], pca)
        c = self.cameras[frame.camera]
        for kind, msg in msgs.items():
            c.pubs[kind].publish(msg)
        c.published(frame, header.stamp.sec + header.stamp.nanosec * 1e-9, self.get_clock().now().nanoseconds * 1e-9)

    def _refine(self, frames, rgbd):
        """The stage before DeFM: refined depth from aligned colour + raw depth, published per frame."""
        out = self.refiner.refine(rgbd[..., :3].astype("uint8"), rgbd[..., 3])
        depth, mask = out.depth.cpu().numpy(), out.mask.cpu().numpy()
        for k, frame in enumerate(frames):
            header, pubs = frame.header(self.cameras[frame.camera].source), self.cameras[frame.camera].pubs
            for kind, msg in refined_msgs(header, depth[k], mask[k]).items():
                pubs[kind].publish(msg)
        return depth

    # --- diagnostics ------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now, arr = time.monotonic(), DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        failed = self.encoder is None or self.failure is not None  # unconfigured, or the last transition failed
        statuses = [node_status(self.get_fully_qualified_name(), self.state, self.failure)] if failed else []
        for i, c in enumerate(self.cameras):
            counters = StreamCounters(c.stats, c.sequences, self.frames.dropped[i], c.reliability,
                                      c.source.unpaired if len(c.source.topics) > 1 else None)
            statuses.append(stream_status(c.source.topics[0].name, self.state, counters, now,
                                          self.processor.inference_s, self.processor.batch_sizes, self.encoder.info,
                                          self.p["stale_warn_s"], self.p["stale_error_s"]))
        arr.status = [DiagnosticStatus(level=bytes([st.level]), name=st.name, message=st.message,
                                       hardware_id=st.hardware_id,
                                       values=[KeyValue(key=k, value=v) for k, v in st.values.items()])
                      for st in statuses]
        self.pub_diag.publish(arr)

    # --- stopping ---------------------------------------------------------------------------------
    def stopping(self, grace: float = 0.5) -> bool:
        """Whether a failure belongs to a shutdown in progress: a signal invalidates the context a
        moment before the executor stops, so give the executor `grace` seconds to say so."""
        return self.loop.stopped.wait(grace) or not self.context.ok()


def deserialize_message_by_name(raw, msg_type: str):
    return deserialize_message(raw, MSG_TYPES[msg_type])


def main(args: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if args is None else args
    if {"-h", "--help"} & set(argv[: argv.index("--ros-args")] if "--ros-args" in argv else argv):
        print(usage())
        return 0
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from .dds_profile import apply_large_data_profile

    profile = apply_large_data_profile()
    rclpy.init(args=args)

    def build() -> Parts:
        node = DefmNode()
        if profile:
            node.get_logger().info(f"Fast DDS large-data profile: {profile}")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        return Parts(spin=executor.spin, start=node.autostart, work=node.work, stop=node.loop.stop,
                     stopping=node.stopping, stop_executor=lambda: executor.shutdown(timeout_sec=1.0),
                     destroy=lambda: (node._release(), node.destroy_node()))

    def finish() -> None:
        if rclpy.ok():
            rclpy.shutdown()
        else:  # a signal shut the context down: still stop rclpy's signal-handling thread
            from rclpy.signals import uninstall_signal_handlers

            uninstall_signal_handlers()

    code = run(build, ok=rclpy.ok, quiet=(ExternalShutdownException,), finish=finish)
    # The process is about to exit: spare the interpreter's final garbage collection over torch's
    # objects (~1.5 s on a small CPU), so that SIGINT/SIGTERM end the node well within 2 s.
    import gc

    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
