"""ONNX export: exact in-graph normalization, parity with torch for every variant, sidecar, failure modes."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from defm_ros import Encoder
from defm_ros.backends.export import (
    FP32_TOLERANCE,
    OPSET,
    ExportError,
    GraphNormalize,
    check_frames,
    check_model,
    export_model,
    export_onnx,
    network_graph,
    normalization_graph,
    read_sidecar,
    resize_bands,
    resize_matrix,
)
from defm_ros.info import StreamInfo
from defm_ros.models import MODELS, build_model
from defm_ros.models.checkpoints import file_sha256
from defm_ros.normalize import InputGeometry, normalize_depth

CNNS = [name for name, spec in MODELS.items() if not spec.is_vit]
CAMERA = (480, 640)


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _encoder(model: str, size=(224, 224), **kw) -> Encoder:
    torch.manual_seed(0)
    return Encoder(model, weights="random", input_size=size, **kw)


@pytest.mark.parametrize(("n_in", "n_out"), [(640, 224), (480, 224), (480, 308), (100, 250), (37, 37)])
def test_resize_matrix_is_torch_antialiased_bilinear(n_in, n_out):
    x = torch.rand(2, 3, n_in, 50) * 10
    ref = F.interpolate(x, size=(n_out, 50), mode="bilinear", align_corners=False, antialias=True)
    assert (resize_matrix(n_in, n_out) @ x - ref).abs().max() < 2e-6


@pytest.mark.parametrize(("n_in", "n_out"), [(640, 224), (480, 224), (480, 308), (100, 250), (37, 37)])
def test_resize_bands_hold_every_tap_and_skip_the_zeros(n_in, n_out):
    m = resize_matrix(n_in, n_out)
    rebuilt = torch.zeros_like(m)
    for k, (i0, i1, w) in enumerate(resize_bands(n_in, n_out)):
        rebuilt[k * 32:k * 32 + w.shape[0], i0:i1] = w
    assert torch.equal(rebuilt, m)
    kept = sum(w.numel() for _, _, w in resize_bands(n_in, n_out))
    if n_in > 2 * n_out:  # a downscale: the bands are a small part of the dense matrix
        assert kept < 0.25 * m.numel()


def _frames_with_invalid() -> torch.Tensor:
    depth, _ = check_frames(CAMERA, 2)
    depth[0, :5, :5] = math.nan
    depth[0, 10, :20] = math.inf
    depth[1, 20, :20] = -math.inf
    depth[1, 30, :20] = 150.0  # beyond the 100 m clip
    return depth


@pytest.mark.parametrize("mode", ["metric", "relative"])
@pytest.mark.parametrize(("size", "align", "pad"), [((224, 224), 32, True), ((200, 300), 32, True),
                                                    ((224, 308), 14, False)])
def test_graph_normalization_matches_normalize_depth(mode, size, align, pad):
    depth = _frames_with_invalid()
    if mode == "relative":
        depth = torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0).clamp(0, 10)
    geom = InputGeometry.for_model(size, align, pad)
    ref = normalize_depth(depth, geom, mode)
    assert (GraphNormalize(CAMERA, geom, mode)(depth) - ref).abs().max() < 1e-5
    info = _encoder("defm_resnet18" if pad else "defm_vit_s14", size, depth_mode=mode).info_obj
    got = _session(normalization_graph(info, CAMERA)).run(None, {"depth": depth.numpy()})[0]
    assert got.shape == tuple(ref.shape)
    assert np.abs(got - ref.numpy()).max() < 1e-5


def test_graph_normalization_uses_no_onnx_resize():
    """ONNX Resize's antialias filter differs from torch's by ~1e-2; the graph must not use it."""
    info = _encoder("defm_resnet18").info_obj
    ops = {n.op_type for n in normalization_graph(info, CAMERA).graph.node}
    assert "Resize" not in ops and "MatMul" in ops


def _assert_parity(side: dict) -> None:
    check = side["onnx"]["check"]
    assert check["max_abs_err_cls"] <= FP32_TOLERANCE and check["max_abs_err_dense"] <= FP32_TOLERANCE
    assert any("raw_depth.png" in f for f in check["frames"]) or check["frames"] == ["synthetic"] * 2


@pytest.mark.parametrize("model", CNNS)
def test_every_cnn_exports_with_normalization_and_matches_torch(model, tmp_path, shared_data):
    enc = _encoder(model)
    path = tmp_path / f"{model}.onnx"
    side = export_onnx(enc.backend.model, enc.info_obj, path, camera_size=CAMERA)
    _assert_parity(side)
    # The file alone reproduces Encoder.encode (torch) on a real frame it was not checked on.
    depth, _ = check_frames(CAMERA, 3)
    cls, dense = _session(onnx.load(path)).run(None, {"depth": depth[2:].numpy()})
    ref = enc.encode(depth[2:])
    h, w = enc.info_obj.dense_size
    assert np.abs(cls - ref.cls.numpy()).max() <= FP32_TOLERANCE
    assert np.abs(dense[:, :, :h, :w] - ref.dense.numpy()).max() <= FP32_TOLERANCE


@pytest.mark.parametrize("size", [(224, 224), (224, 308)])
def test_vit_s14_exports_and_matches_torch(size, tmp_path):
    enc = _encoder("defm_vit_s14", size)
    side = export_onnx(enc.backend.model, enc.info_obj, tmp_path / "vit.onnx", camera_size=CAMERA, batch=None)
    _assert_parity(side)
    assert side["onnx"]["input_shape"] == ["batch", *CAMERA]
    assert side["dense_size"] == [size[0] // 14, size[1] // 14]


def test_network_only_export_and_sidecar(tmp_path, shared_data):
    enc = _encoder("defm_regnet_y_400mf", (200, 300))
    path = tmp_path / "net.onnx"
    side = export_onnx(enc.backend.model, enc.info_obj, path, batch=2)
    assert side == read_sidecar(path) == json.loads((tmp_path / "net.onnx.json").read_text())
    meta = side["onnx"]
    assert meta["opset"] == OPSET and meta["input_name"] == "input" and meta["input_shape"] == [2, 3, 224, 320]
    assert meta["normalization_in_graph"] is False and meta["camera_size"] is None and meta["batch"] == 2
    assert meta["outputs"] == ["cls", "dense"]
    info = StreamInfo.from_dict(side)  # the node publishes ~/features/info from this
    assert (info.model, info.input_size, info.padded_size) == ("defm_regnet_y_400mf", (200, 300), (224, 320))
    assert info.backend == "onnxruntime" and info.random_weights
    model = onnx.load(path)
    assert [o.name for o in model.graph.output] == ["cls", "dense"]
    assert model.opset_import[0].version == OPSET


def test_dynamic_batch_runs_any_batch(tmp_path):
    enc = _encoder("defm_efficientnet_b0")
    path = tmp_path / "dyn.onnx"
    export_onnx(enc.backend.model, enc.info_obj, path, camera_size=CAMERA, batch=None)
    depth, _ = check_frames(CAMERA, 3)
    cls, dense = _session(onnx.load(path)).run(None, {"depth": depth.numpy()})
    ref = enc.encode(depth)
    assert cls.shape == (3, 192) and np.abs(cls - ref.cls.numpy()).max() <= FP32_TOLERANCE


def test_export_from_checkpoint_file(tmp_path):
    torch.manual_seed(1)
    net = build_model("defm_resnet18")
    ckpt = tmp_path / "defm_resnet18.pth"
    torch.save({"model": net.state_dict()}, ckpt)
    side = export_model("defm_resnet18", tmp_path / "r18.onnx", weights=ckpt, camera_size=CAMERA)
    assert side["weights"] == str(ckpt) and side["checkpoint_sha256"] == file_sha256(ckpt)
    assert not side["random_weights"] and side["warnings"] == []
    _assert_parity(side)
    depth, _ = check_frames(CAMERA, 1)
    cls, _ = _session(onnx.load(tmp_path / "r18.onnx")).run(None, {"depth": depth.numpy()})
    with torch.no_grad():
        ref, _ = net.eval()(normalize_depth(depth, InputGeometry((224, 224), (224, 224))))
    assert np.abs(cls - ref.numpy()).max() <= FP32_TOLERANCE


def test_fp16_export_is_half_inside_float_outside(tmp_path):
    enc = _encoder("defm_regnet_y_400mf")
    path = tmp_path / "h.onnx"
    side = export_onnx(enc.backend.model, enc.info_obj, path, camera_size=CAMERA, precision="fp16")
    check = side["onnx"]["check"]
    assert FP32_TOLERANCE < check["tolerance_dense"] and check["max_abs_err_dense"] <= check["tolerance_dense"]
    model = onnx.load(path)
    dtypes = {init.data_type for init in model.graph.initializer if init.name.startswith("net.")}
    assert dtypes == {onnx.TensorProto.FLOAT16}
    io_types = {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io_types == {onnx.TensorProto.FLOAT}
    assert next(enc.backend.model.parameters()).dtype == torch.float32  # the torch model is left as it was


def test_check_catches_a_graph_that_disagrees_with_torch():
    enc = _encoder("defm_resnet18")
    model = network_graph(enc.backend.model, enc.info_obj)
    torch.manual_seed(123)
    other = build_model("defm_resnet18")  # different weights: the check must refuse
    with pytest.raises(ExportError, match="differs from torch"):
        check_model(model, other, enc.info_obj)


def test_missing_sidecar_is_refused(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(ExportError, match="sidecar"):
        read_sidecar(tmp_path / "x.onnx")


def test_bad_arguments_are_refused(tmp_path):
    enc = _encoder("defm_resnet18")
    with pytest.raises(ValueError, match="batch"):
        export_onnx(enc.backend.model, enc.info_obj, tmp_path / "x.onnx", batch=0)
    with pytest.raises(ValueError, match="precision"):
        export_onnx(enc.backend.model, enc.info_obj, tmp_path / "x.onnx", precision="bf16")
    assert not (tmp_path / "x.onnx").exists()
