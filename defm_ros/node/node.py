"""defm_node: a lifecycle node; images in, dense features and class tokens out (SPEC §5, §6): depth for
DeFM models, colour for Theia models (inputs.py).

It wires parameters, QoS, subscriptions and publishers to the core; ros_io.py holds the rclpy adapters
(message types, raw subscriptions, publishers, diagnostics messages, main's start-up and shutdown).
- configure: check the parameters, load the weights strictly (on the CPU), create the publishers;
- activate: build the device backend, publish ~/features/info, subscribe;
- deactivate: stop taking frames, finish the batch in flight, free the device memory;
- cleanup, shutdown: free everything. `autostart` (default true) configures and activates at start-up.
Callbacks only park the newest frame per camera; the main thread's loop (work) decodes, batches,
encodes and publishes them (pipeline.Processor), so stale frames are dropped and counted, never queued.
runner.py has the thread and signal choreography; inputs.py what each modality subscribes to.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.subscription import Subscription

from ..features import REFINED_POINTS, feature_msgs, refined_msgs
from ..inputs import camera_inputs
from ..msgs.points import camera_matrix
from . import ros_io
from .diagnostics import camera_status, node_status, startup_line
from .params import (
    PARAMS,
    RUNTIME,
    check_all,
    descriptor,
    encoder_args,
    input_modality,
    refiner_args,
    refusal,
    usage,
)
from .pipeline import Camera, InferenceLoop, LatestFrames, Processor, RefineStage, TorchThreads
from .reliability import Handover, follow_due, follow_publishers
from .runner import forward_logs

OK = TransitionCallbackReturn.SUCCESS


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
        self._ticks = 0  # of the follow timer: often during a handover, each second once settled (follow_due)
        self.create_timer(0.1, self._follow_tick, clock=steady)
        self.create_timer(1.0, self._publish_diagnostics, clock=steady)
        self.encoder, self.refiner, self.cameras, self.frames, self.processor = None, None, [], None, None
        self.failure: Exception | None = None  # why the last transition failed
        self.loop = InferenceLoop(wake=lambda: self.executor is not None and self.executor.wake())

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
        return self._transition("configure", self._configure, self.release)

    def _configure(self) -> None:
        from ..encoder import Encoder  # torch is imported only once parameters are known to be valid
        from ..models.weights import CheckpointError

        CheckpointError.syntax = staticmethod(lambda name: f"{name}:=FILE")  # errors name the node's parameters

        p = {name: self.get_parameter(name).value for name in PARAMS}
        if problems := check_all(p):
            raise ValueError("invalid parameters: " + "; ".join(problems))
        self.p = p
        self.encoder = Encoder(**encoder_args(p))
        if (refiner := refiner_args(p)) is not None:
            from ..refiner import Refiner

            self.refiner = Refiner(**refiner)
        for ns, source in camera_inputs(input_modality(p), p, self.resolve_topic_name):
            pubs = ros_io.camera_publishers(self, ns, refined=self.refiner is not None, points=p["publish_points"])
            self.cameras.append(Camera(source, pubs, ros_io.InferenceGate()))
        self.frames = LatestFrames(len(self.cameras))
        log = self.get_logger()
        self.processor = Processor(self.encoder, [c.source for c in self.cameras], [c.stats for c in self.cameras],
                                   ros_io.deserialize, self._publish,
                                   warn=lambda m: log.warn(m, throttle_duration_sec=2.0),
                                   error=lambda m: log.error(m, throttle_duration_sec=2.0), stopping=self.stopping,
                                   stage=None if self.refiner is None else RefineStage(
                                       self.refiner, self._publish_refined, self._points_wanted))
        self.state = "inactive"

    def on_activate(self, state) -> TransitionCallbackReturn:
        return self._transition("activate", lambda: self._activate(state), self._deactivate)

    def _activate(self, state) -> None:
        self.encoder.open()
        if self.refiner is not None:
            self.refiner.open()
        super().on_activate(state)  # enables the lifecycle publishers
        info = ros_io.info_msg({**self.encoder.info, "refined_by": self.refiner.info if self.refiner else None})
        for c in self.cameras:
            c.pubs["info"].publish(info)
        self.state = "active"
        self.loop.resume(self.frames, self.processor, self.cameras)
        self._follow_publishers()
        self.get_logger().info(startup_line(self.encoder.info, [t.name for c in self.cameras for t in c.source.topics]))

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
        self.release()
        return OK

    on_shutdown = on_error = on_cleanup  # error processing frees everything too, back to unconfigured

    def release(self) -> None:
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
    def _follow_tick(self) -> None:
        self._ticks += 1
        subs = [h for c in self.cameras for h in c.subs.values()]
        if follow_due(subs, sum(len(c.source.topics) for c in self.cameras), self._ticks):
            self._follow_publishers()

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
        return ros_io.subscribe_raw(self, topic.msg_type, topic.name, reliability, self.cameras[camera].gate,
                                    lambda msg, info: self._on_message(camera, topic.role, msg, info))

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
        threads = TorchThreads()
        self.loop.run(lambda: self.p, self.context.ok, lambda: threads.set(self.p["threads"]))

    def _publish(self, frame, header, cls, dense, model_input) -> None:
        pca = model_input.shape[:2] if self.p["publish_pca"] else None
        msgs = feature_msgs(header, cls, dense, self.p["output_dtype"], pca)
        c = self.cameras[frame.camera]
        for kind, msg in msgs.items():
            c.pubs[kind].publish(msg)
        c.published(frame, header.stamp.sec + header.stamp.nanosec * 1e-9, self.get_clock().now().nanoseconds * 1e-9)

    def _points_wanted(self, frame) -> np.ndarray | None:
        """The frame's camera matrix where its points are published and someone listens (else None: the
        refiner does not back-project it); a camera_info without one costs the points, with a warning."""
        pub = self.cameras[frame.camera].pubs.get(REFINED_POINTS)
        if pub is None or pub.get_subscription_count() == 0:
            return None
        try:
            return camera_matrix(frame.msg["camera_info"])
        except ValueError as exc:
            self.get_logger().warn(f"no points: {exc}", throttle_duration_sec=2.0)
            return None

    def _publish_refined(self, frame, depth, mask, points) -> None:
        c = self.cameras[frame.camera]
        msgs = refined_msgs(frame.header(c.source), depth, mask, frame.msg["camera_info"], points)
        for kind, msg in msgs.items():
            c.pubs[kind].publish(msg)
        c.stats.points_out += points is not None

    # --- diagnostics ------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now, p, failed = time.monotonic(), self.p, self.encoder is None or self.failure is not None
        statuses = [node_status(self.get_fully_qualified_name(), self.state, self.failure)] if failed else []
        statuses += [camera_status(c, self.frames.dropped[i], self.state, now, self.processor.inference_s,
                                   self.processor.batch_sizes, self.encoder.info, p["stale_warn_s"], p["stale_error_s"])
                     for i, c in enumerate(self.cameras)]
        self.pub_diag.publish(ros_io.diagnostic_array(statuses, self.get_clock().now().to_msg()))

    # --- stopping ---------------------------------------------------------------------------------
    def stopping(self, grace: float = 0.5) -> bool:
        """Whether a failure belongs to a shutdown in progress: a signal invalidates the context a
        moment before the executor stops, so give the executor `grace` seconds to say so."""
        return self.loop.stopped.wait(grace) or not self.context.ok()


def main(args: list[str] | None = None) -> int:
    return ros_io.main(DefmNode, args, usage())


if __name__ == "__main__":
    sys.exit(main())
