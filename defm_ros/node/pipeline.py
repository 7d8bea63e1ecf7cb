"""The node's moving parts that need no ROS: newest-frame slots, batching and stream statistics.

Kept apart from node.py so they are unit-tested without a ROS graph and the node stays wiring.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..inputs import group_by_shape
from .reliability import Handover


@dataclass
class Frame:
    camera: int
    msg: Any  # {role: message}: serialized as received, deserialized by Processor
    received: float  # time.monotonic() when the callback saw it (the primary topic's message)

    def header(self, source: Any) -> Any:
        """The (deserialized) primary message's header: what every output of this frame carries."""
        return self.msg[source.topics[0].role].header


class LatestFrames:
    """One slot per camera holding only its newest unprocessed frame.

    A frame that is replaced before the worker takes it is dropped and counted, so the queue never
    grows and nothing stale is ever processed.
    """

    def __init__(self, cameras: int) -> None:
        self._slots: list[Frame | None] = [None] * cameras
        self._cond = threading.Condition()
        self.dropped = [0] * cameras

    def put(self, camera: int, msg: Any, received: float | None = None) -> None:
        with self._cond:
            if self._slots[camera] is not None:
                self.dropped[camera] += 1
            self._slots[camera] = Frame(camera, msg, time.monotonic() if received is None else received)
            self._cond.notify()

    def take(self, timeout: float, window: float = 0.0) -> list[Frame]:
        """Wait up to `timeout` for a frame; then up to `window` more for the other cameras' frames."""
        with self._cond:
            if not self._cond.wait_for(lambda: any(self._slots), timeout):
                return []
            if window > 0 and len(self._slots) > 1:
                self._cond.wait_for(lambda: all(self._slots), window)
            frames = [f for f in self._slots if f is not None]
            self._slots = [None] * len(self._slots)
            return frames

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


@dataclass
class SequenceGaps:
    """Frames a publisher sent that never reached the node: gaps in its DDS publication sequence numbers.

    A keep-last-1 subscription lets DDS overwrite a frame that the node has not taken yet; only the
    publisher's sequence numbers show it. Counting needs one publisher: a number without one (several
    publishers, or an rmw/rclpy that does not report it) ends the run, and a number that goes back (a
    restarted driver) starts a new one.
    """

    last: int | None = None
    dropped: int = 0

    def observe(self, seq: int | None) -> int:
        """How many sent frames this one accounts for: itself plus those skipped since the last."""
        gap = seq - self.last - 1 if seq is not None and self.last is not None and seq > self.last else 0
        self.last = seq
        self.dropped += gap
        return gap + 1


@dataclass
class StreamStats:
    """Rates and latencies of one camera's stream over a sliding window, for diagnostics."""

    window: float = 5.0
    received: deque = field(default_factory=lambda: deque(maxlen=4096))
    published: deque = field(default_factory=lambda: deque(maxlen=4096))
    latency_recv: deque = field(default_factory=lambda: deque(maxlen=512))
    latency_stamp: deque = field(default_factory=lambda: deque(maxlen=512))
    rejected: int = 0
    errors: int = 0
    last_input: float | None = None
    total_out: int = 0
    total_in: int = 0
    points_out: int = 0  # refined frames whose points were computed and published (only while subscribed)

    def on_input(self, now: float, frames: int = 1) -> None:
        """`frames` > 1: this frame plus the ones the publisher sent that never arrived (SequenceGaps)."""
        self.received.append((now, frames))
        self.total_in += frames
        self.last_input = now

    def on_output(self, now: float, since_receive: float, since_stamp: float) -> None:
        self.published.append((now, 1))
        self.latency_recv.append(since_receive)
        self.latency_stamp.append(since_stamp)
        self.total_out += 1

    def rate(self, events: deque, now: float) -> float:
        """Frames per second over the window, from (time, frames) events."""
        recent = [(t, n) for t, n in events if now - t <= self.window]
        if len(recent) < 2:
            return 0.0
        frames = sum(n for _, n in recent[1:])
        return frames / max(recent[-1][0] - recent[0][0], 1e-9)

    @staticmethod
    def percentiles(values: deque) -> tuple[float, float]:
        if not values:
            return float("nan"), float("nan")
        a = np.fromiter(values, float)
        return float(np.median(a)), float(np.percentile(a, 95))

    def staleness(self, now: float) -> float | None:
        """Seconds since the last input frame, None before the first one."""
        return None if self.last_input is None else now - self.last_input


@dataclass
class Camera:
    """One camera from configure to cleanup: its Input, its publishers and subscriptions (role ->
    reliability.Handover), its input gate, and its counters."""

    source: Any  # inputs.Input
    pubs: dict[str, Any]
    gate: Any
    sequences: SequenceGaps = field(default_factory=SequenceGaps)
    stats: StreamStats = field(default_factory=StreamStats)
    subs: dict[str, Handover] = field(default_factory=dict)

    def arrived(self, role: str, msg: Any, seq: int | None, now: float) -> dict[str, Any] | None:
        """A (serialized) message of `role`: counted if it is the primary topic's, then paired; returns
        the frame it completes. `seq`: the publication sequence number, None when unknown."""
        if role == self.source.topics[0].role:
            self.stats.on_input(now, self.sequences.observe(seq))
        return self.source.pair(role, msg)

    def published(self, frame: Frame, stamp_s: float, clock_s: float) -> None:
        """A frame's features went out: latency from receipt (monotonic) and from its stamp (node clock)."""
        now = time.monotonic()
        self.stats.on_output(now, now - frame.received, clock_s - stamp_s)

    @property
    def reliability(self) -> str | None:
        return next((h.reliability for h in self.subs.values() if h.reliability), None)


class Processor:
    """Decode, batch and encode one take of frames, and hand each frame's features to `publish`.

    Frames hold {role: serialized message} (inputs.py). Failures cost frames, never the loop: a frame
    that does not decode is rejected (counted; logged by `warn`, which the node throttles), a batch
    whose forward pass fails is counted as failed (logged by `error`).
    """

    def __init__(self, encoder: Any, inputs: list[Any], stats: list[StreamStats],
                 deserialize: Callable[[Any, str], Any], publish: Callable[[Frame, Any, np.ndarray, np.ndarray,
                                                                            np.ndarray], None],
                 warn: Callable[[str], None], error: Callable[[str], None], stopping: Callable[[], bool],
                 stage: Callable[[list[Frame], np.ndarray], np.ndarray] | None = None) -> None:
        """`stage`: runs on each batch before the encoder (depth refinement) and returns its input."""
        self.encoder, self.inputs, self.stats, self.stage = encoder, inputs, stats, stage
        self.deserialize, self.publish = deserialize, publish
        self.warn, self.error, self.stopping = warn, error, stopping
        self.batch_sizes: deque[int] = deque(maxlen=256)
        self.inference_s: deque[float] = deque(maxlen=256)  # per batch: Encoder.encode to numpy

    def process(self, frames: list[Frame], params: dict[str, Any]) -> None:
        decoded = []
        for f in frames:
            source = self.inputs[f.camera]
            try:
                msgs = {t.role: self.deserialize(f.msg[t.role], t.msg_type) for t in source.topics}
                f.msg = msgs
                decoded.append((f, source.decode(msgs, params)))
            except Exception as exc:  # DepthDecodeError; anything else is a codec bug, still not fatal
                self.stats[f.camera].rejected += 1
                why = exc if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                self.warn(f"rejected frame on {source.topics[0].name}: {why}")
        for group in group_by_shape(decoded):
            self.batch_sizes.append(len(group))
            try:
                self._encode_and_publish(group, params["output_dtype"])
            except Exception as exc:
                if self.stopping():
                    return  # SIGINT/SIGTERM invalidate the context (and publishers) before spin returns
                for f, _ in group:
                    self.stats[f.camera].errors += 1
                self.error(f"publishing failed: {type(exc).__name__}: {exc}")

    def _encode_and_publish(self, group: list[tuple[Frame, np.ndarray]], dtype: str) -> None:
        try:
            start = time.perf_counter()
            xs = np.stack([x for _, x in group])
            if self.stage is not None:
                xs = self.stage([f for f, _ in group], xs)
            cls, dense = self.encoder.encode(xs).numpy(dtype)
            self.inference_s.append(time.perf_counter() - start)  # the stage's time included
        except Exception as exc:  # a backend fault (e.g. CUDA OOM) costs this batch, not the node
            for f, _ in group:
                self.stats[f.camera].errors += 1
            self.error(f"inference failed, frame dropped: {type(exc).__name__}: {exc}")
            return
        for k, (f, _) in enumerate(group):
            self.publish(f, f.header(self.inputs[f.camera]), cls[k], dense[k], xs[k])


class RefineStage:
    """The stage in front of a depth encoder (Processor's `stage`): refined depth from packed RGB-D, handed to
    the encoder where it lies (on the refiner's device), its host copy, mask and points published per frame.

    `intrinsics(frame)`: the frame's 3x3 pixel camera matrix where its points are wanted (someone listens),
    else None; points are computed for those frames only."""

    def __init__(self, refiner: Any, publish: Callable[[Frame, np.ndarray, np.ndarray, np.ndarray | None], None],
                 intrinsics: Callable[[Frame], np.ndarray | None] = lambda frame: None) -> None:
        self.refiner, self.publish, self.intrinsics = refiner, publish, intrinsics

    def __call__(self, frames: list[Frame], rgbd: np.ndarray) -> Any:
        from ..refiner import refine_for_encoder

        depth, host_depth, mask, points = refine_for_encoder(self.refiner, rgbd, [self.intrinsics(f) for f in frames])
        for k, frame in enumerate(frames):
            self.publish(frame, host_depth[k], mask[k], points[k])
        return depth


class TorchThreads:
    """torch's CPU thread count for inference, set on the thread that runs it (0: torch's default)."""

    def __init__(self) -> None:
        self.current = 0

    def set(self, n: int) -> None:
        if n > 0 and n != self.current:
            import torch

            torch.set_num_threads(n)
            self.current = n


class InferenceLoop:
    """The main thread's loop: take the newest frames, close the cameras' input gates, process, reopen.

    `resume` starts taking frames (lifecycle activate); `pause` stops: no new batch starts, the batch in
    flight finishes and publishes, frames parked meanwhile are let go (deactivate); `stop` ends `run`.
    """

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake  # the executor: rebuild its wait set with the reopened subscriptions
        self.active, self.stopped, self.busy = threading.Event(), threading.Event(), threading.Lock()
        self._work: tuple[LatestFrames, Processor, list[Camera]] | None = None

    def resume(self, frames: LatestFrames, processor: Processor, cameras: list[Camera]) -> None:
        self._work = (frames, processor, cameras)
        self.active.set()

    def pause(self) -> None:
        self.active.clear()
        with self.busy:
            if self._work is not None:
                self._work[0].take(timeout=0)
            self._work = None

    def stop(self) -> None:
        self.stopped.set()
        self.active.set()  # wake run() so that it sees the stop
        if self._work is not None:
            self._work[0].wake()

    def run(self, params: Callable[[], dict[str, Any]], ok: Callable[[], bool],
            prepare: Callable[[], None] = lambda: None) -> None:
        """Until stop(); `prepare` runs on this thread before each batch (e.g. torch's thread count)."""
        while not self.stopped.is_set() and ok():
            work = self._work
            if not self.active.wait(0.1) or work is None:
                continue
            frames, processor, cameras = work
            p = params()
            taken = frames.take(timeout=0.1, window=p["batch_window_ms"] / 1000.0)
            with self.busy:
                if not taken or not self.active.is_set():
                    continue
                prepare()
                gated = [c.gate for c in cameras if c.source.gated and c.sequences.last is not None]
                for g in gated:
                    g.closed = True
                try:
                    processor.process(taken, p)
                finally:
                    for g in gated:
                        g.closed = False
                    if gated:
                        self.wake()
