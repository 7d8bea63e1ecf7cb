"""The /diagnostics content for a stream and for an unconfigured node, without a ROS graph."""

from __future__ import annotations

from defm_ros.node.diagnostics import ERROR, OK, WARN, StreamCounters, node_status, stream_level, stream_status
from defm_ros.node.pipeline import SequenceGaps, StreamStats

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
    stats.rejected, stats.errors, stats.points_out = 4, 1, 1
    return StreamCounters(stats, seq, dropped_in_node=3, reliability="reliable")


def test_stream_status_counts_every_frame():
    st = stream_status("/cam/depth", "active", _counters(), 10.4, [0.04, 0.05], [1, 2], INFO, 1.0, 5.0)
    v = st.values
    assert st.name == "defm_node: /cam/depth" and st.level == OK and st.hardware_id == "cpu"
    assert v["received_frames"] == "6" and v["dropped_frames"] == "5" and v["dropped_frames_in_dds"] == "2"
    assert v["rejected_frames"] == "4" and v["failed_frames"] == "1" and v["published_frames"] == "1"
    assert v["published_points"] == "1"
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


def test_a_cameras_status_is_named_after_its_first_topic_and_counts_unpaired_only_when_paired():
    from types import SimpleNamespace

    from defm_ros.node.diagnostics import camera_status
    from defm_ros.node.pipeline import Camera

    def camera(roles):
        topics = [SimpleNamespace(name=f"/cam/{r}", role=r) for r in roles]
        return Camera(SimpleNamespace(topics=topics, unpaired=7), pubs={}, gate=None)

    single = camera(["depth"])
    st = camera_status(single, 2, "active", 1.0, [], [], INFO, 1.0, 5.0)
    assert st.name == "defm_node: /cam/depth" and "unpaired_messages" not in st.values
    assert st.values["dropped_frames"] == "2" and st.values["input_reliability"] == "none"
    rgbd = camera_status(camera(["color", "depth", "info"]), 0, "active", 1.0, [], [], INFO, 1.0, 5.0)
    assert rgbd.name == "defm_node: /cam/color" and rgbd.values["unpaired_messages"] == "7"


def test_startup_line_names_model_device_and_topics():
    from defm_ros.node.diagnostics import startup_line

    info = {**INFO, "precision": "fp32", "input_size": [224, 224], "dense_channels": 512, "dense_size": [28, 28],
            "stride": 8, "weights": "models/defm_resnet18.pth"}
    line = startup_line(info, ["/a/depth", "/b/depth"])
    assert line.startswith("defm_resnet18 on cpu (torch, fp32), input [224, 224], dense 512x[28, 28] stride 8")
    assert line.endswith("weights models/defm_resnet18.pth; listening on /a/depth, /b/depth")
