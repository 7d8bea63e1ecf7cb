"""Newest-frame slots, shape grouping and stream statistics, without a ROS graph."""

from __future__ import annotations

import threading
import time

import numpy as np

from defm_ros.pipeline import LatestFrames, SequenceGaps, StreamStats, group_by_shape


def test_only_the_newest_frame_is_kept_and_the_rest_counted():
    slots = LatestFrames(2)
    for k in range(5):
        slots.put(0, f"a{k}")
    slots.put(1, "b0")
    frames = slots.take(timeout=0.1)
    assert [(f.camera, f.msg) for f in frames] == [(0, "a4"), (1, "b0")]
    assert slots.dropped == [4, 0]
    assert slots.take(timeout=0.01) == []


def test_take_waits_for_the_other_cameras_within_the_window():
    slots = LatestFrames(3)
    slots.put(0, "a")
    threading.Timer(0.05, lambda: (slots.put(1, "b"), slots.put(2, "c"))).start()
    t = time.monotonic()
    frames = slots.take(timeout=1.0, window=1.0)
    assert len(frames) == 3 and time.monotonic() - t < 0.5
    slots.put(0, "a")
    t = time.monotonic()
    assert len(slots.take(timeout=1.0, window=0.05)) == 1  # the window is a bound, not a wait for all
    assert time.monotonic() - t < 0.5


def test_frames_of_different_size_get_their_own_pass():
    slots = LatestFrames(3)
    shapes = [(480, 640), (240, 320), (480, 640)]
    for cam in range(3):
        slots.put(cam, cam)
    items = [(f, np.zeros(s)) for f, s in zip(slots.take(0.1), shapes, strict=True)]
    groups = group_by_shape(items)
    assert sorted(len(g) for g in groups) == [1, 2]


def test_stream_stats_rates_latency_and_staleness():
    s = StreamStats(window=10.0)
    assert s.staleness(5.0) is None and np.isnan(s.percentiles(s.latency_recv)[0])
    for k in range(31):
        s.on_input(k / 30)
    for k in range(10):
        s.on_output(k / 10, 0.010 + 0.001 * k, 0.020)
    assert abs(s.rate(s.received, 1.0) - 30.0) < 1e-6 and abs(s.rate(s.published, 1.0) - 10.0) < 1e-6
    med, p95 = s.percentiles(s.latency_recv)
    assert abs(med - 0.0145) < 1e-9 and 0.0175 < p95 <= 0.019
    assert abs(s.staleness(3.0) - 2.0) < 1e-9 and s.total_in == 31 and s.total_out == 10


def test_sequence_gaps_count_what_dds_overwrote():
    gaps = SequenceGaps()
    assert [gaps.observe(s) for s in (7, 8, 12, 13)] == [1, 1, 4, 1]  # 9, 10, 11 never arrived
    assert gaps.dropped == 3
    assert gaps.observe(2) == 1 and gaps.dropped == 3  # a restarted driver starts counting afresh
    assert gaps.observe(None) == 1 and gaps.last is None  # several publishers: no counting ...
    assert gaps.observe(9) == 1 and gaps.dropped == 3  # ... and no gap across that stretch


def test_input_rate_counts_the_frames_that_never_arrived():
    s = StreamStats(window=10.0)
    s.on_input(0.0)
    for k in range(1, 11):
        s.on_input(k / 10, frames=3)  # every third frame of a 30 Hz camera reached the node
    assert abs(s.rate(s.received, 1.0) - 30.0) < 1e-6 and s.total_in == 31
