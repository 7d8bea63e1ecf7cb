"""The /diagnostics content for a stream and for an unconfigured node, without a ROS graph."""

from __future__ import annotations

from defm_ros.diagnostics import ERROR, OK, WARN, StreamCounters, node_status, stream_level, stream_status
from defm_ros.pipeline import SequenceGaps, StreamStats

INFO = {"backend": "torch", "device": "cpu", "model": "defm_resnet18", "random_weights": False}


def test_levels_follow_staleness():
    assert stream_level(None, 1.0, 5.0, False) == (WARN, "no input yet")
    assert stream_level(0.2, 1.0, 5.0, False) == (OK, "ok")
    assert stream_level(2.0, 1.0, 5.0, False) == (WARN, "input stale for 2.0 s")
    assert stream_level(6.0, 1.0, 5.0, False) == (ERROR, "input stale for 6.0 s")
    assert stream_level(0.2, 1.0, 5.0, True) == (WARN, "ok; RANDOM WEIGHTS")
    assert stream_level(6.0, 1.0, 5.0, True)[0] == ERROR  # random weights never lower a level


def _counters() -> StreamCounters:
    stats, seq = StreamStats(), SequenceGaps()
    for k, n in enumerate((1, 1, 3, 1)):  # frames 0..5, of which 2 never arrived (DDS overwrote them)
        stats.on_input(10.0 + k * 0.1, n)
    seq.dropped = 2
    stats.on_output(10.35, 0.05, 0.08)
    stats.rejected, stats.errors = 4, 1
    return StreamCounters(stats, seq, dropped_in_node=3, reliability="reliable")


def test_stream_status_counts_every_frame():
    st = stream_status("/cam/depth", "active", _counters(), 10.4, [0.04, 0.05], [1, 2], INFO, 1.0, 5.0)
    v = st.values
    assert st.name == "defm_node: /cam/depth" and st.level == OK and st.hardware_id == "cpu"
    assert v["received_frames"] == "6" and v["dropped_frames"] == "5" and v["dropped_frames_in_dds"] == "2"
    assert v["rejected_frames"] == "4" and v["failed_frames"] == "1" and v["published_frames"] == "1"
    assert v["input_reliability"] == "reliable" and v["lifecycle_state"] == "active"
    assert v["mean_batch_size"] == "1.50" and v["inference_ms_median"] == "45.0"
    assert float(v["input_rate_hz"]) > 0 and v["latency_receive_to_publish_ms_median"] == "50.0"


def test_a_stream_of_an_inactive_node_warns():
    st = stream_status("/cam/depth", "inactive", _counters(), 10.4, [], [], INFO, 1.0, 5.0)
    assert st.level == WARN and st.message == "inactive (lifecycle)" and st.values["inference_ms_median"] == "nan"


def test_node_status_says_why_configure_failed():
    assert node_status("/defm_node", "unconfigured", None).level == WARN
    st = node_status("/defm_node", "unconfigured", FileNotFoundError("no defm_resnet18.pth"))
    assert st.level == ERROR and st.message == "unconfigured: FileNotFoundError: no defm_resnet18.pth"
    assert st.values == {"lifecycle_state": "unconfigured"}
