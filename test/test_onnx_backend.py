"""ONNX Runtime backend through Encoder: parity with torch, sidecar checks, providers, cache, GPU."""

from __future__ import annotations

import logging

import onnxruntime as ort
import pytest
import torch

from defm_ros import Encoder
from defm_ros.backends import DeviceUnavailableError
from defm_ros.backends.onnx_backend import OnnxBackend
from defm_ros.backends.onnx_file import FP32_TOLERANCE
from defm_ros.normalize import DepthPreprocess, InputGeometry
from defm_ros.sample_data import sample_depth

CAMERA = (480, 640)
HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()
gpu = pytest.mark.skipif(not (torch.cuda.is_available() and HAS_CUDA_EP),
                         reason="needs a CUDA GPU, torch with CUDA and onnxruntime-gpu (CUDAExecutionProvider)")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFM_ROS_CACHE", str(tmp_path / "cache"))


def _pair(model: str, size=(224, 224), device: str = "cpu", **kw) -> tuple[Encoder, Encoder]:
    """Torch and ORT encoders with the same (seeded random) weights."""
    torch.manual_seed(0)
    ref = Encoder(model, weights="random", input_size=size, device=device)
    torch.manual_seed(0)
    return ref, Encoder(model, weights="random", input_size=size, device=device, backend="onnxruntime", **kw)


def _assert_close(a, b, tol: float = FP32_TOLERANCE) -> None:
    assert a.cls.shape == b.cls.shape and a.dense.shape == b.dense.shape
    assert (a.cls.float().cpu() - b.cls.float().cpu()).abs().max() <= tol
    assert (a.dense.float().cpu() - b.dense.float().cpu()).abs().max() <= tol


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.from_numpy(sample_depth(CAMERA, 2)[0])


PREP = DepthPreprocess(InputGeometry((224, 224), (224, 224)))  # what the fused file below holds


@pytest.mark.parametrize("model", ["defm_resnet18", "defm_efficientnet_b0", "defm_vit_s14"])
def test_encoder_onnxruntime_matches_torch(model, frames):
    ref, enc = _pair(model)
    assert isinstance(enc.backend, OnnxBackend)
    for depth in (frames[0], frames[0].numpy(), frames):  # (H, W) torch, numpy, and a batch
        _assert_close(enc.encode(depth), ref.encode(depth))
    info = enc.info
    assert info["backend"] == "onnxruntime" and info["providers"] == ["CPUExecutionProvider"]
    assert info["extra"]["normalization_in_graph"] is False and info["extra"]["onnx_file"].endswith(".onnx")
    assert info["random_weights"] and info["warnings"]


def test_normalization_graph_matches_torch_preprocess(frames):
    ref, enc = _pair("defm_regnet_y_400mf", (200, 300))
    x = enc.preprocess(frames)  # ONNX Runtime's own normalization graph for this camera size
    assert x.shape == (2, 3, 224, 320)
    assert (x - ref.preprocess(frames)).abs().max() < 1e-5


def test_per_call_depth_mode_gets_its_own_normalization_graph(frames):
    ref, enc = _pair("defm_resnet18")
    rel = frames.clamp(0, 10)
    _assert_close(enc.encode(rel, depth_mode="relative"), ref.encode(rel, depth_mode="relative"))
    _assert_close(enc.encode(rel), ref.encode(rel))  # and the metric one is still there
    assert len(enc.backend._pre) == 2


def test_export_is_cached_per_weights(caplog):
    torch.manual_seed(0)
    Encoder("defm_resnet18", weights="random", backend="onnxruntime")
    with caplog.at_level(logging.INFO, logger="defm_ros"):
        torch.manual_seed(0)
        Encoder("defm_resnet18", weights="random", backend="onnxruntime")
        assert "using cached ONNX export" in caplog.text
        caplog.clear()
        torch.manual_seed(1)  # other random weights must not reuse the file
        Encoder("defm_resnet18", weights="random", backend="onnxruntime")
        assert "using cached" not in caplog.text and "exporting" in caplog.text


@pytest.fixture(scope="module")
def fused_file(tmp_path_factory) -> tuple:
    """A file with normalization in its graph for 480x640 depth, plus the torch encoder it came from."""
    torch.manual_seed(0)
    ref = Encoder("defm_efficientnet_b0", weights="random")
    path = tmp_path_factory.mktemp("onnx") / "b0.onnx"
    ref.export_onnx(path, camera_size=CAMERA, batch=1)
    return path, ref


def test_encoder_runs_an_exported_file_alone(fused_file, frames):
    path, ref = fused_file
    enc = Encoder("defm_efficientnet_b0", weights=path, backend="onnxruntime")
    _assert_close(enc.encode(frames[1]), ref.encode(frames[1]))
    info = enc.info
    assert info["random_weights"] and info["weights"] == "random"  # provenance comes from the sidecar
    assert info["extra"]["normalization_in_graph"] and info["extra"]["camera_size"] == list(CAMERA)
    with pytest.raises(ValueError, match="exported for 480x640 input, got 240x320"):
        enc.encode(frames[:1, ::2, ::2])
    with pytest.raises(ValueError, match="batch 1, got 2"):
        enc.encode(frames)
    with pytest.raises(ValueError, match="takes raw input"):
        enc.backend.run(ref.preprocess(frames[1]))
    with pytest.raises(ValueError, match="metric depth normalization to 224x224 fused into its graph"):
        enc.encode(frames[1], depth_mode="relative")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"model": "defm_resnet18"}, "model 'defm_efficientnet_b0'"),
    ({"model": "defm_efficientnet_b0", "input_size": (256, 256)}, r"input_size \[224, 224\]"),
    ({"model": "defm_efficientnet_b0", "dense_level": "P3"}, "dense_level 'P4'"),
    ({"model": "defm_efficientnet_b0", "depth_mode": "relative"}, "depth_mode 'metric'"),
])
def test_a_file_for_another_stream_is_refused(fused_file, kwargs, match):
    path, _ = fused_file
    with pytest.raises(ValueError, match=match):
        Encoder(weights=path, backend="onnxruntime", **kwargs)


def test_missing_gpu_provider_is_a_loud_downgrade(fused_file, caplog):
    if HAS_CUDA_EP:
        pytest.skip("this onnxruntime has the CUDA provider; the downgrade path cannot be reached")
    path, _ = fused_file
    with caplog.at_level(logging.WARNING, logger="defm_ros"):
        be = OnnxBackend(path, PREP, device="cuda", trt=True)
    report = be.report()
    assert be.device == torch.device("cpu") and report.device == "cpu"
    assert report.providers == ["CPUExecutionProvider"]
    assert any("TensorRT" in w for w in report.warnings) and any("onnxruntime-gpu" in w for w in report.warnings)
    assert "onnxruntime-gpu" in caplog.text
    with pytest.raises(DeviceUnavailableError, match="strict"):
        OnnxBackend(path, PREP, device="cuda", strict=True)
    enc = Encoder("defm_efficientnet_b0", weights=path, backend="onnxruntime", device="cuda")
    assert enc.info["device"] == "cpu" and any("onnxruntime-gpu" in w for w in enc.info["warnings"])


def test_sessions_spin_within_a_run_only(fused_file):
    path, _ = fused_file
    spinning = OnnxBackend(path, PREP).session.get_session_options()
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert spinning.get_session_config_entry("session.force_spinning_stop") == "1"  # never between frames
    be = OnnxBackend(path, PREP, threads=1, spin=False)
    opts = be.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 1


def test_bench_compares_backends_side_by_side(capsys, tmp_path):
    import argparse
    import json

    from defm_ros.cli import bench

    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    args = p.parse_args(["-m", "defm_regnet_y_400mf", "--iters", "3", "--warmup", "1", "--size", "64",
                         "--json", str(tmp_path / "b.json"), "--rounds", "2",
                         "-b", "torch", "torch:channels_last", "onnxruntime:nospin"])
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "speedup" in out and "CPUExecutionProvider" in out
    res = json.loads((tmp_path / "b.json").read_text())["results"]
    assert [r["backend"] for r in res] == ["torch", "torch:channels_last", "onnxruntime:nospin"]
    assert all(len(r["end_to_end"]["block_medians_ms"]) == 2 for r in res)
    assert res[2]["info"]["extra"]["spinning"] is False
    assert all(r["max_abs_diff_vs_baseline"] <= FP32_TOLERANCE for r in res)
    assert all(r["end_to_end"]["p95_ms"] >= r["end_to_end"]["median_ms"] > 0 for r in res)


@pytest.mark.gpu
@gpu
def test_cuda_provider_matches_torch_cuda_and_stays_on_gpu(frames):
    ref, enc = _pair("defm_resnet18", device="cuda")
    assert enc.info["providers"][0] == "CUDAExecutionProvider"
    out = enc.encode(frames.cuda())
    assert out.cls.is_cuda and out.dense.is_cuda
    _assert_close(out, ref.encode(frames.cuda()), tol=1e-3)  # TF32/cuDNN algorithm choices differ


@pytest.mark.gpu
@gpu
def test_tensorrt_fp16_builds_and_caches_an_engine(frames, tmp_path):
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no TensorrtExecutionProvider (TensorRT libraries not installed)")
    ref, enc = _pair("defm_resnet18", device="cuda", precision="fp16", trt=True, trt_cache_dir=tmp_path / "trt")
    assert enc.info["providers"][0] == "TensorrtExecutionProvider"
    out = enc.encode(frames.cuda())
    assert any((tmp_path / "trt").iterdir())  # engines are cached for the next start
    assert (out.dense.float() - ref.encode(frames.cuda()).dense.float()).abs().max() < 0.1


def test_theia_on_onnxruntime_matches_torch(frames):
    from defm_ros.sample_data import sample_color

    rgb = torch.from_numpy(sample_color(CAMERA, 2)[0])
    ref, enc = _pair("theia_tiny")
    _assert_close(enc.encode(rgb), ref.encode(rgb))
    _assert_close(enc.encode(rgb[0].numpy()), ref.encode(rgb[0].numpy()))
    assert enc.info["modality"] == "color" and enc.info["providers"] == ["CPUExecutionProvider"]
    x = enc.preprocess(rgb)  # ONNX Runtime's own graph of the ViT image processor (float64 resize)
    assert torch.equal(x, ref.preprocess(rgb))


def test_bench_runs_a_colour_model_on_colour_frames(capsys):
    import argparse

    from defm_ros.cli import bench

    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    assert bench.main(p.parse_args(["-m", "theia_tiny", "--iters", "2", "--warmup", "1"])) == 0
    out = capsys.readouterr().out
    assert "480x640 color" in out and "onnxruntime" in out


def test_tensorrt_profile_covers_batch_1_to_max_for_dynamic_files_only(tmp_path):
    import onnx

    from defm_ros.backends.onnx_backend import trt_profile

    torch.manual_seed(0)
    enc = Encoder("defm_resnet18", weights="random")
    dynamic, fixed = tmp_path / "dyn.onnx", tmp_path / "fixed.onnx"
    enc.export_onnx(dynamic, camera_size=CAMERA)
    enc.export_onnx(fixed, camera_size=CAMERA, batch=1)
    name = onnx.load(dynamic).graph.input[0].name
    assert trt_profile(onnx.load(dynamic), 4) == {"trt_profile_min_shapes": f"{name}:1x480x640",
                                                   "trt_profile_opt_shapes": f"{name}:4x480x640",
                                                   "trt_profile_max_shapes": f"{name}:4x480x640"}
    assert trt_profile(onnx.load(fixed), 4) == {}
    graph = onnx.load(dynamic)
    graph.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "height"  # a symbolic height: no profile
    assert trt_profile(graph, 4) == {}


def test_tensorrt_gets_the_profile_for_the_network_and_the_preprocessing_sessions(tmp_path, monkeypatch):
    """On a machine with the TensorRT EP (faked here: this onnxruntime has none), every session is
    created with the profile, and a batch beyond it is refused before ORT sees it."""
    torch.manual_seed(0)
    enc = Encoder("defm_resnet18", weights="random")
    path = tmp_path / "net.onnx"
    enc.export_onnx(path)  # network only, dynamic batch: a preprocessing session per camera size
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    created = []
    real = ort.InferenceSession

    def session(model, so, providers, provider_options):
        created.append(dict(zip(providers, provider_options, strict=True)))
        return real(model, so, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", session)
    be = OnnxBackend(path, PREP, device="cuda", trt=True, trt_max_batch=3)
    be.preprocess(torch.zeros(2, *CAMERA), PREP)
    assert len(created) == 2
    for opts in created:
        trt = opts["TensorrtExecutionProvider"]
        assert trt["trt_profile_min_shapes"].endswith(":1x" + trt["trt_profile_max_shapes"].split(":3x")[1])
        assert trt["trt_engine_cache_enable"] and "trt_profile_min_shapes" not in opts["CUDAExecutionProvider"]
    assert created[0]["TensorrtExecutionProvider"]["trt_profile_max_shapes"].endswith(":3x3x224x224")
    assert created[1]["TensorrtExecutionProvider"]["trt_profile_max_shapes"].endswith(":3x480x640")
    be.providers = ["TensorrtExecutionProvider", "CPUExecutionProvider"]  # what a real TensorRT machine reports
    with pytest.raises(ValueError, match="larger than the TensorRT engine's profile"):
        be.run(torch.zeros(4, 3, 224, 224))
    with pytest.raises(ValueError, match="trt_max_batch must be >= 1"):
        OnnxBackend(path, PREP, trt_max_batch=0)
