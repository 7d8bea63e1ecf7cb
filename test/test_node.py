"""defm_node over real topics: a separate node process, fixture cameras, a probe (SPEC §5, §6)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from .helpers.checkpoints import write_checkpoint
from .helpers.rosgraph import start_camera, start_node, stop

pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from defm_ros.features import from_msg  # noqa: E402

BASE = {"model": "defm_efficientnet_b0", "weights": "random", "input_size": [224, 224]}


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "compressed"])
def test_features_carry_headers_and_equal_encode(probe, encoding, tmp_path, shared_data):
    ckpt = write_checkpoint(tmp_path / "w.pth", BASE["model"])
    transport = "compressedDepth" if encoding == "compressed" else "raw"
    node = start_node({**BASE, "weights": str(ckpt), "transport": transport}, {"~/depth": "/cam/depth"})
    dense = probe.listen(Image, "/defm_node/features/dense")
    cls = probe.listen(Image, "/defm_node/features/cls")
    info = probe.listen(String, "/defm_node/features/info", latched=True)
    topic = "/cam/depth/compressedDepth" if encoding == "compressed" else "/cam/depth"
    cam = start_camera(topic, "--rate", "5", "--count", "8", "--encoding", encoding)
    try:
        assert probe.wait_for(lambda: len(dense) >= 6 and len(cls) >= 6, 60), stop(node)[1]
    finally:
        cam.wait(30)
        code, log = stop(node)
    from defm_ros import Encoder
    from defm_ros.msgs.depth import decode_depth

    from .fixtures.camera_publisher import frames

    enc = Encoder(BASE["model"], weights=str(ckpt), input_size=(224, 224))
    depths = [decode_depth(m) for m in frames(encoding)]
    meta = json.loads(info[0].data)
    assert meta["model"] == BASE["model"] and meta["dense_channels"] == 64 and meta["stride"] == 16
    for d_msg, c_msg in zip(dense, cls, strict=False):
        assert d_msg.header == c_msg.header
        assert d_msg.header.frame_id == "camera_depth_optical_frame"
        k = d_msg.header.stamp.sec - 1000
        assert d_msg.encoding == "32FC64" and (d_msg.height, d_msg.width) == (14, 14)
        assert c_msg.encoding == "32FC192" and (c_msg.height, c_msg.width) == (1, 1)
        want = enc.encode(depths[k % len(depths)])
        np.testing.assert_allclose(from_msg(d_msg), want.dense[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(from_msg(c_msg).reshape(-1), want.cls[0].numpy(), atol=1e-4)
    assert code == 0, log


def test_diagnostics_and_bad_parameters(probe):
    diags = probe.listen(DiagnosticArray, "/diagnostics")
    node = start_node({**BASE, "stale_warn_s": 0.5, "stale_error_s": 1.0}, {"~/depth": "/diag/depth"})
    try:
        assert probe.wait_for(lambda: any(s.name.endswith("/diag/depth") for a in diags for s in a.status), 60)
    finally:
        stop(node)
    status = next(s for a in diags for s in a.status if s.name.endswith("/diag/depth"))
    keys = {kv.key for kv in status.values}
    assert {"input_rate_hz", "output_rate_hz", "latency_receive_to_publish_ms_p95",
            "latency_stamp_to_publish_ms_p95", "dropped_frames", "rejected_frames", "backend", "device"} <= keys
    assert status.level == DiagnosticStatus.WARN  # no input yet, random weights

    bad = start_node({**BASE, "precision": "fp64"})
    try:
        code = bad.wait(60)  # autostart's configure refuses the value: the process ends by itself
    finally:
        _, log = stop(bad)
    assert code == 1 and "precision must be one of" in log and "defm_node: fatal" in log, log


def _set(probe, client, name, value):
    from rcl_interfaces.msg import Parameter, ParameterValue
    from rclpy.parameter import Parameter as P

    req = SetParameters.Request()
    pv: ParameterValue = P(name, value=value).get_parameter_value()
    req.parameters = [Parameter(name=name, value=pv)]
    t = time.monotonic()
    future = client.call_async(req)
    assert probe.wait_for(future.done, 10), f"set {name} timed out"
    return future.result().results[0], time.monotonic() - t


def test_parameters_answer_during_inference_and_bad_values_are_refused(probe, shared_data):
    """A heavy model under a 30 Hz stream: parameter calls are still answered at once."""
    node = start_node({"model": "defm_resnet50", "weights": "random", "input_size": [320, 320]},
                      {"~/depth": "/busy/depth"})
    client = probe.node.create_client(SetParameters, "/defm_node/set_parameters")
    diags = probe.listen(DiagnosticArray, "/diagnostics")
    try:
        assert client.wait_for_service(60)
        cam = start_camera("/busy/depth", "--rate", "30", "--count", "150")
        assert probe.wait_for(lambda: any(kv.key == "published_frames" and int(kv.value) > 2
                                          for a in diags for s in a.status for kv in s.values), 60)
        ok, took = _set(probe, client, "publish_pca", True)
        assert ok.successful and took < 0.5, took
        bad, took = _set(probe, client, "depth_scale", 5.0)
        assert not bad.successful and "depth_scale" in bad.reason and took < 0.5
        fixed, _ = _set(probe, client, "model", "defm_resnet18")
        assert not fixed.successful and "read-only" in fixed.reason
        choice, _ = _set(probe, client, "batch_window_ms", -1.0)
        assert not choice.successful
        cam.wait(30)
    finally:
        stop(node)


def test_onnxruntime_backend_from_an_exported_file(probe, tmp_path, shared_data):
    """The node runs an exported ONNX file alone; its info names the providers actually used."""
    from defm_ros import Encoder
    from defm_ros.msgs.depth import decode_depth

    from .fixtures.camera_publisher import frames

    ckpt = write_checkpoint(tmp_path / "b0.pth", BASE["model"])
    onnx = tmp_path / "b0.onnx"
    Encoder(BASE["model"], weights=ckpt, lazy=True).export_onnx(onnx, camera_size=(480, 640))
    node = start_node({**BASE, "backend": "onnxruntime", "weights": str(onnx)}, {"~/depth": "/ort/depth"})
    dense = probe.listen(Image, "/defm_node/features/dense")
    info = probe.listen(String, "/defm_node/features/info", latched=True)
    cam = start_camera("/ort/depth", "--rate", "5", "--count", "6")
    try:
        assert probe.wait_for(lambda: len(dense) >= 4 and info, 90), stop(node)[1]
    finally:
        cam.wait(30)
        stop(node)
    meta = json.loads(info[0].data)
    assert meta["backend"] == "onnxruntime" and meta["providers"] == ["CPUExecutionProvider"]
    enc = Encoder(BASE["model"], weights=str(ckpt), input_size=(224, 224))
    depths = [decode_depth(m) for m in frames("16UC1")]
    for msg in dense[:3]:
        want = enc.encode(depths[(msg.header.stamp.sec - 1000) % len(depths)]).dense[0].numpy()
        np.testing.assert_allclose(from_msg(msg), want, atol=1e-4)
