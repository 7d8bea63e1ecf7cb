"""Exported ONNX files: exact in-graph normalization, parity with torch for every variant, onnx.checker,
the sidecar, the cache and failure modes (backends/graph.py, backends/onnx_file.py)."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from defm_ros import Encoder
from defm_ros.backends.graph import OPSET, network_graph, preprocess_graph
from defm_ros.backends.onnx_file import FP32_TOLERANCE, ExportError, check_model, export_onnx, read_sidecar
from defm_ros.info import StreamInfo
from defm_ros.models import MODELS, build_model
from defm_ros.models.registry import FAMILIES
from defm_ros.models.weights import file_sha256
from defm_ros.preprocess.depth import DepthPreprocess, GraphNormalize, InputGeometry, normalize_depth
from defm_ros.sample_data import sample_depth

from .helpers.checkpoints import save_defm
from .helpers.encoders import seeded

DEFM = FAMILIES["vit"].stats  # DeFM's mean and std

CNNS = [name for name, spec in MODELS.items() if not spec.is_vit]
CAMERA = (480, 640)


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _encoder(model: str, size=(224, 224), **kw) -> Encoder:
    return seeded(model, input_size=size, **kw)


def _frames(count: int = 2) -> torch.Tensor:
    return torch.from_numpy(sample_depth(CAMERA, count)[0])


def _frames_with_invalid() -> torch.Tensor:
    depth = _frames()
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
    ref = normalize_depth(depth, geom, *DEFM, mode)
    assert (GraphNormalize(CAMERA, geom, *DEFM, mode)(depth) - ref).abs().max() < 1e-5
    got = _session(preprocess_graph(DepthPreprocess(geom, *DEFM, mode), CAMERA)).run(None, {"depth": depth.numpy()})[0]
    assert got.shape == tuple(ref.shape)
    assert np.abs(got - ref.numpy()).max() < 1e-5


def test_graph_normalization_uses_no_onnx_resize():
    """ONNX Resize's antialias filter differs from torch's by ~1e-2; the graph must not use it."""
    prep = DepthPreprocess(InputGeometry((224, 224), (224, 224)), *DEFM)
    ops = {n.op_type for n in preprocess_graph(prep, CAMERA).graph.node}
    assert "Resize" not in ops and "MatMul" in ops


def _assert_parity(side: dict) -> None:
    """Checked within fp32 tolerance, on the real frames (the tests that call this have shared data)."""
    check = side["onnx"]["check"]
    assert check["max_abs_err_cls"] <= FP32_TOLERANCE and check["max_abs_err_dense"] <= FP32_TOLERANCE
    assert check["frames"] and all(f.endswith("raw_depth.png") for f in check["frames"]), check["frames"]
    assert side["onnx"]["checker"].startswith("onnx.checker")


@pytest.mark.parametrize("model", CNNS)
def test_every_cnn_exports_with_normalization_and_matches_torch(model, tmp_path, shared_data):
    enc = _encoder(model)
    path = tmp_path / f"{model}.onnx"
    _assert_parity(enc.export_onnx(path, camera_size=CAMERA))
    # The file alone reproduces Encoder.encode (torch) on a real frame it was not checked on.
    depth = _frames(3)
    cls, dense = _session(onnx.load(path)).run(None, {"depth": depth[2:].numpy()})
    ref = enc.encode(depth[2:])
    h, w = enc.info_obj.dense_size
    assert np.abs(cls - ref.cls.numpy()).max() <= FP32_TOLERANCE
    assert np.abs(dense[:, :, :h, :w] - ref.dense.numpy()).max() <= FP32_TOLERANCE


@pytest.mark.parametrize("size", [(224, 224), (224, 308)])
def test_vit_s14_exports_and_matches_torch(size, tmp_path, shared_data):
    enc = _encoder("defm_vit_s14", size)
    side = enc.export_onnx(tmp_path / "vit.onnx", camera_size=CAMERA, batch=None)
    _assert_parity(side)
    assert side["onnx"]["input_shape"] == ["batch", *CAMERA] and side["onnx"]["input_dtype"] == "float32"
    assert side["dense_size"] == [size[0] // 14, size[1] // 14]


def test_without_shared_data_the_check_runs_on_synthetic_frames_with_invalid_pixels(tmp_path, monkeypatch):
    import defm_ros.sample_data as sd

    monkeypatch.setattr(sd, "data_root", lambda: None)
    depth, names = sd.sample_depth(CAMERA, 2)
    assert names == ["synthetic", "synthetic"] and np.isnan(depth).any() and np.isinf(depth).any()
    assert (depth == 0).any()
    side = _encoder("defm_resnet18").export_onnx(tmp_path / "s.onnx", camera_size=CAMERA, batch=2)
    assert side["onnx"]["check"]["frames"] == ["synthetic", "synthetic"]
    assert side["onnx"]["check"]["max_abs_err_dense"] <= FP32_TOLERANCE


def test_network_only_export_and_sidecar(tmp_path, shared_data):
    enc = _encoder("defm_regnet_y_400mf", (200, 300))
    path = tmp_path / "net.onnx"
    side = enc.export_onnx(path, batch=2)
    _assert_parity(side)
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


def test_exported_files_are_readable_by_other_users(tmp_path):
    """The mode follows the umask (0644 under 022), not mkstemp's 0600: a node in a container reads them."""
    old = os.umask(0o022)
    try:
        _encoder("defm_resnet18").export_onnx(tmp_path / "m.onnx")
    finally:
        os.umask(old)
    for name in ("m.onnx", "m.onnx.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_dynamic_batch_runs_any_batch(tmp_path):
    enc = _encoder("defm_efficientnet_b0")
    path = tmp_path / "dyn.onnx"
    enc.export_onnx(path, camera_size=CAMERA, batch=None)
    depth = _frames(3)
    cls, dense = _session(onnx.load(path)).run(None, {"depth": depth.numpy()})
    ref = enc.encode(depth)
    assert cls.shape == (3, 192) and np.abs(cls - ref.cls.numpy()).max() <= FP32_TOLERANCE


def test_export_from_checkpoint_file(tmp_path):
    torch.manual_seed(1)
    net = build_model("defm_resnet18")
    ckpt = tmp_path / "defm_resnet18.pth"
    save_defm(net.state_dict(), ckpt, wrap=True)
    enc = Encoder("defm_resnet18", weights=ckpt, lazy=True)  # no backend: export needs the CPU weights only
    side = enc.export_onnx(tmp_path / "r18.onnx", camera_size=CAMERA)
    assert side["weights"] == str(ckpt) and side["checkpoint_sha256"] == file_sha256(ckpt)
    assert not side["random_weights"] and side["warnings"] == []
    depth = _frames(1)
    cls, _ = _session(onnx.load(tmp_path / "r18.onnx")).run(None, {"depth": depth.numpy()})
    with torch.no_grad():
        ref, _ = net.eval()(normalize_depth(depth, InputGeometry((224, 224), (224, 224)), *DEFM))
    assert np.abs(cls - ref.numpy()).max() <= FP32_TOLERANCE


def test_fp16_export_is_half_inside_float_outside(tmp_path):
    enc = _encoder("defm_regnet_y_400mf")
    path = tmp_path / "h.onnx"
    side = enc.export_onnx(path, camera_size=CAMERA, precision="fp16")
    check = side["onnx"]["check"]
    assert FP32_TOLERANCE < check["tolerance_dense"] and check["max_abs_err_dense"] <= check["tolerance_dense"]
    model = onnx.load(path)
    dtypes = {init.data_type for init in model.graph.initializer if init.name.startswith("net.")}
    assert dtypes == {onnx.TensorProto.FLOAT16}
    io_types = {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io_types == {onnx.TensorProto.FLOAT}
    assert next(enc.net.parameters()).dtype == torch.float32  # the torch model is left as it was
    assert check["reference_half"] == "torch fp16 cpu"
    for name in ("cls", "dense"):
        assert 0 < check[f"max_abs_err_{name}_half_reference"] <= check[f"tolerance_{name}"]


def test_fp16_export_is_refused_where_an_intermediate_overflows_fp16(tmp_path):
    """ONNX Runtime's CPU provider runs fp16 Conv/MatMul chains in fp32, so its check cannot see an
    activation beyond fp16's 65504; a GPU stores it as inf and the features become NaN. Here conv1's
    outputs reach ~1e5 and the GroupNorm after it brings them back: fine in fp32, inf in fp16."""
    enc = _encoder("defm_resnet18", (64, 64))
    with torch.no_grad():
        enc.net.backbone.conv1.weight.mul_(1e5)
    check = enc.export_onnx(tmp_path / "f.onnx", precision="fp32")["onnx"]["check"]
    assert check["max_abs_err_dense"] <= FP32_TOLERANCE
    with pytest.raises(ExportError, match=r"fp16 overflows.*cls.*export fp32.*bf16"):
        enc.export_onnx(tmp_path / "h.onnx", precision="fp16")
    assert not (tmp_path / "h.onnx").exists()


def test_check_catches_a_graph_that_disagrees_with_torch():
    enc = _encoder("defm_resnet18")
    model = network_graph(enc.net, enc.info_obj)
    torch.manual_seed(123)
    other = build_model("defm_resnet18").eval()  # different weights: the check must refuse
    with pytest.raises(ExportError, match="differs from torch"):
        check_model(model, other, DepthPreprocess(enc.geometry, *DEFM), sample_depth())


def test_check_refuses_non_finite_outputs():
    enc = _encoder("defm_resnet18", (64, 64))
    with torch.no_grad():
        enc.net.backbone.conv1.weight[0, 0, 0, 0] = math.inf  # NaN in torch and onnx alike: no parity to judge
    with pytest.raises(ExportError, match="onnx output cls has .* non-finite values"):
        check_model(network_graph(enc.net, enc.info_obj), enc.net, DepthPreprocess(enc.geometry, *DEFM),
                    sample_depth())


def _dangling_input(model) -> None:
    model.graph.node[0].input[0] = "no_such_tensor"


def _half_weight(model) -> None:  # a float16 weight on a float32 Conv: shape inference's InferenceError
    from onnx import numpy_helper

    init, conv = model.graph.initializer, next(n for n in model.graph.node if n.op_type == "Conv")
    k = next(i for i, t in enumerate(init) if t.name == conv.input[1])
    init[k].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init[k]).astype(np.float16), init[k].name))


@pytest.mark.parametrize("breakage", [_dangling_input, _half_weight])
def test_an_invalid_graph_is_refused_by_the_checker_before_anything_is_written(tmp_path, monkeypatch, breakage):
    import defm_ros.backends.onnx_file as of

    def broken(*args, **kwargs):
        model = network_graph(*args, **kwargs)
        breakage(model)
        return model

    monkeypatch.setattr(of, "network_graph", broken)
    with pytest.raises(ExportError, match="not valid ONNX"):
        _encoder("defm_resnet18").export_onnx(tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_missing_or_corrupt_sidecar_is_refused(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(ExportError, match="sidecar"):
        read_sidecar(tmp_path / "x.onnx")
    (tmp_path / "x.onnx.json").write_text("{not json")
    with pytest.raises(ExportError, match="not a readable sidecar"):
        read_sidecar(tmp_path / "x.onnx")


def test_bad_arguments_are_refused(tmp_path):
    enc = _encoder("defm_resnet18")
    with pytest.raises(ValueError, match="batch"):
        enc.export_onnx(tmp_path / "x.onnx", batch=0)
    with pytest.raises(ValueError, match="precision"):
        enc.export_onnx(tmp_path / "x.onnx", precision="bf16")
    with pytest.raises(ValueError, match="batch"):
        export_onnx(enc.net, enc.info_obj, DepthPreprocess(enc.geometry, *DEFM), tmp_path / "x.onnx", batch=-1)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("camera", [CAMERA, (224, 224)])
def test_theia_exports_with_its_preprocessing_and_matches_torch(camera, tmp_path, shared_data):
    from defm_ros.sample_data import sample_color

    enc = _encoder("theia_tiny")
    path = tmp_path / "theia.onnx"
    side = enc.export_onnx(path, camera_size=camera, batch=None)
    check = side["onnx"]["check"]
    assert check["max_abs_err_cls"] <= FP32_TOLERANCE and check["max_abs_err_dense"] <= FP32_TOLERANCE
    assert all(f.split("/")[-1].startswith("rgb.") for f in check["frames"]), check["frames"]
    assert side["onnx"]["input_name"] == "image" and side["onnx"]["input"].startswith("uint8 RGB")
    assert side["onnx"]["input_dtype"] == "uint8" and side["onnx"]["output_dtype"] == "float32"
    assert side["modality"] == "color" and "non-commercial" in side["license"]
    model = onnx.load(path)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    rgb = sample_color(camera, 3)[0]
    cls, dense = _session(model).run(None, {"image": rgb})
    ref = enc.encode(rgb)
    assert np.abs(cls - ref.cls.numpy()).max() <= FP32_TOLERANCE
    assert np.abs(dense - ref.dense.numpy()).max() <= FP32_TOLERANCE


def test_the_colour_graph_resizes_exactly_as_pil(tmp_path, shared_data):
    """The exported preprocessing is the same float64 arithmetic: bit-equal to the eager ColorPreprocess."""
    from defm_ros.preprocess.color import ColorPreprocess
    from defm_ros.sample_data import sample_color

    prep = ColorPreprocess(InputGeometry((224, 224), (224, 224)), *FAMILIES["theia"].stats)
    rgb = sample_color(CAMERA, 2)[0]
    got = _session(preprocess_graph(prep, CAMERA)).run(None, {"image": rgb})[0]
    assert np.array_equal(got, prep(torch.from_numpy(rgb)).numpy())


def test_layer_norms_are_exported_centred_so_every_onnxruntime_is_exact():
    """ONNX Runtime 1.23 (Python 3.10's newest) computes LayerNorm's variance as E[x^2] - E[x]^2 and was
    4e-3 off on LingBot's first block, and NaN where the mean is large against the spread."""
    import onnxruntime as ort
    from torch import nn

    from defm_ros.backends.graph import _centered_layer_norms, to_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 64)).eval()
    x = 2.0 + 0.03 * torch.randn(2, 16, 64)  # LingBot's first tokens: uncentred, onnxruntime 1.23 is 1e-3 off
    with _centered_layer_norms(net):
        model = to_onnx(net, x, "x", ["y"], dynamic_batch=True)
    assert "forward" not in vars(net[0])  # the module is itself again
    ops = [n.op_type for n in model.graph.node]
    assert "LayerNormalization" in ops and ops.index("ReduceMean") < ops.index("LayerNormalization")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    assert np.abs(y - net(x).detach().numpy()).max() < 1e-4
