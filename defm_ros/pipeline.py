"""The node's moving parts that need no ROS: newest-frame slots, batching and stream statistics.

Kept apart from node.py so they are unit-tested without a ROS graph and the node stays wiring.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Frame:
    camera: int
    msg: Any
    received: float  # time.monotonic() when the callback saw it


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


def group_by_shape(items: list[tuple[Frame, np.ndarray]]) -> list[list[tuple[Frame, np.ndarray]]]:
    """Frames of equal size share a forward pass; a camera that changed resolution gets its own."""
    groups: dict[tuple[int, ...], list[tuple[Frame, np.ndarray]]] = {}
    for frame, depth in items:
        groups.setdefault(depth.shape, []).append((frame, depth))
    return list(groups.values())


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
