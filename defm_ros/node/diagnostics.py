"""The node's /diagnostics content for one camera stream, as plain data (levels and key/values).

Kept out of node.py so that the rules (when a stream is stale, what each counter means) are tested
without a ROS graph; the node only wraps the result in diagnostic_msgs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .pipeline import Camera, SequenceGaps, StreamStats

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclass
class Status:
    """One diagnostic_msgs/DiagnosticStatus, as plain data."""

    level: int
    name: str
    message: str
    hardware_id: str = ""
    values: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamCounters:
    """Everything the node knows about one camera's stream."""

    stats: StreamStats
    sequences: SequenceGaps
    dropped_in_node: int  # frames replaced in the newest-frame slot before inference took them
    reliability: str | None  # the input subscription's, None when there is none
    unpaired: int | None = None  # paired inputs (RGB-D): messages that found no partners


def stream_level(staleness: float | None, warn_s: float, error_s: float, random_weights: bool) -> tuple[int, str]:
    """OK, WARN (no input yet, stale beyond warn_s, random weights) or ERROR (stale beyond error_s)."""
    level, message = OK, "ok"
    if staleness is None:
        level, message = WARN, "no input yet"
    elif staleness > error_s:
        level, message = ERROR, f"input stale for {staleness:.1f} s"
    elif staleness > warn_s:
        level, message = WARN, f"input stale for {staleness:.1f} s"
    if random_weights:
        level, message = max(level, WARN), message + "; RANDOM WEIGHTS"
    return level, message


def stream_values(c: StreamCounters, now: float, inference_s: Sequence[float], batch_sizes: Sequence[int],
                  info: dict[str, Any]) -> dict[str, str]:
    """The key/values of one stream's status (README: diagnostics fields)."""
    s = c.stats
    recv_med, recv_p95 = s.percentiles(s.latency_recv)
    stamp_med, stamp_p95 = s.percentiles(s.latency_stamp)
    infer_med, infer_p95 = s.percentiles(inference_s)
    return {
        "input_rate_hz": f"{s.rate(s.received, now):.2f}",
        "output_rate_hz": f"{s.rate(s.published, now):.2f}",
        "latency_receive_to_publish_ms_median": f"{recv_med * 1e3:.1f}",
        "latency_receive_to_publish_ms_p95": f"{recv_p95 * 1e3:.1f}",
        "latency_stamp_to_publish_ms_median": f"{stamp_med * 1e3:.1f}",
        "latency_stamp_to_publish_ms_p95": f"{stamp_p95 * 1e3:.1f}",
        "inference_ms_median": f"{infer_med * 1e3:.1f}",  # all cameras' batches
        "inference_ms_p95": f"{infer_p95 * 1e3:.1f}",
        "received_frames": str(s.total_in),
        "dropped_frames": str(c.dropped_in_node + c.sequences.dropped),
        "dropped_frames_in_dds": str(c.sequences.dropped),  # never taken: arrived during inference
        "rejected_frames": str(s.rejected),
        "failed_frames": str(s.errors),
        "published_frames": str(s.total_out),
        "published_points": str(s.points_out),
        **({} if c.unpaired is None else {"unpaired_messages": str(c.unpaired)}),
        "mean_batch_size": f"{sum(batch_sizes) / max(len(batch_sizes), 1):.2f}",
        "backend": info["backend"],
        "device": info["device"],
        "model": info["model"],
        "input_reliability": c.reliability or "none",
    }


def node_status(name: str, state: str, failure: Exception | None) -> Status:
    """The node itself while it has no streams (unconfigured): WARN, or ERROR with why configure failed."""
    why = f": {type(failure).__name__}: {failure}" if failure else ""
    return Status(ERROR if failure else WARN, name, f"{state}{why}", values={"lifecycle_state": state})


def stream_status(topic: str, state: str, c: StreamCounters, now: float, inference_s: Sequence[float],
                  batch_sizes: Sequence[int], info: dict[str, Any], warn_s: float, error_s: float) -> Status:
    """One camera stream: its level (stale input, random weights, not active) and all its counters."""
    level, message = stream_level(c.stats.staleness(now), warn_s, error_s, info["random_weights"])
    if state != "active":
        level, message = max(level, WARN), f"{state} (lifecycle)"
    values = stream_values(c, now, inference_s, batch_sizes, info)
    values["lifecycle_state"] = state
    return Status(level, f"defm_node: {topic}", message, info["device"], values)


def camera_status(camera: Camera, dropped_in_node: int, state: str, now: float, inference_s: Sequence[float],
                  batch_sizes: Sequence[int], info: dict[str, Any], warn_s: float, error_s: float) -> Status:
    """stream_status for one of the node's cameras (pipeline.Camera), named after its first topic."""
    source = camera.source
    counters = StreamCounters(camera.stats, camera.sequences, dropped_in_node, camera.reliability,
                              source.unpaired if len(source.topics) > 1 else None)
    return stream_status(source.topics[0].name, state, counters, now, inference_s, batch_sizes, info, warn_s, error_s)


def startup_line(info: dict[str, Any], topics: Sequence[str]) -> str:
    """The node's log line at activation: what runs where, and what it listens to."""
    return (f"{info['model']} on {info['device']} ({info['backend']}, {info['precision']}), input "
            f"{info['input_size']}, dense {info['dense_channels']}x{info['dense_size']} stride {info['stride']}, "
            f"weights {info['weights']}; listening on {', '.join(topics)}")
