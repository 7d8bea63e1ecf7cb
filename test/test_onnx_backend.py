"""ONNX Runtime backend through Encoder: parity with torch, sidecar checks, providers, cache, GPU."""

from __future__ import annotations

import json
import logging
import os

import onnxruntime as ort
import pytest
import torch

from defm_ros import Encoder
from defm_ros.backends import DeviceUnavailableError
from defm_ros.backends.onnx_backend import OnnxBackend
from defm_ros.backends.onnx_file import FP32_TOLERANCE
from defm_ros.models.registry import FAMILIES
from defm_ros.preprocess.depth import DepthPreprocess, InputGeometry
from defm_ros.sample_data import sample_depth

from .helpers.encoders import seeded

CAMERA = (480, 640)
HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()
gpu = pytest.mark.skipif(not (torch.cuda.is_available() and HAS_CUDA_EP),
                         reason="needs a CUDA GPU, torch with CUDA and onnxruntime-gpu (CUDAExecutionProvider)")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFM_ROS_CACHE", str(tmp_path / "cache"))


def _pair(model: str, size=(224, 224), device: str = "cpu", **kw) -> tuple[Encoder, Encoder]:
    """Torch and ORT encoders with the same (seeded random) weights."""
    return (seeded(model, input_size=size, device=device),
            seeded(model, input_size=size, device=device, backend="onnxruntime", **kw))


def _assert_close(a, b, tol: float = FP32_TOLERANCE) -> None:
    assert a.cls.shape == b.cls.shape and a.dense.shape == b.dense.shape
    assert (a.cls.float().cpu() - b.cls.float().cpu()).abs().max() <= tol
    assert (a.dense.float().cpu() - b.dense.float().cpu()).abs().max() <= tol


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.from_numpy(sample_depth(CAMERA, 2)[0])


PREP = DepthPreprocess(InputGeometry((224, 224), (224, 224)), *FAMILIES["vit"].stats)  # what the fused file below holds


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
    seeded(backend="onnxruntime")
    with caplog.at_level(logging.INFO, logger="defm_ros"):
        seeded(backend="onnxruntime")
        assert "using cached ONNX export" in caplog.text
        caplog.clear()
        seeded(seed=1, backend="onnxruntime")  # other random weights must not reuse the file
        assert "using cached" not in caplog.text and "exporting" in caplog.text


@pytest.fixture(scope="module")
def fused_file(tmp_path_factory) -> tuple:
    """A file with normalization in its graph for 480x640 depth, plus the torch encoder it came from."""
    ref = seeded("defm_efficientnet_b0")
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


def test_tensorrt_profile_covers_batch_1_to_max_for_dynamic_inputs_only():
    from defm_ros.backends.onnx_backend import trt_profile

    assert trt_profile({"depth": [None, 480, 640]}, 4) == {"trt_profile_min_shapes": "depth:1x480x640",
                                                           "trt_profile_opt_shapes": "depth:4x480x640",
                                                           "trt_profile_max_shapes": "depth:4x480x640"}
    assert trt_profile({"depth": [1, 480, 640]}, 4) == {}
    assert trt_profile({"depth": [None, None, 640]}, 4) == {}  # a symbolic height: no profile can be stated


def test_tensorrt_gets_the_profile_from_the_sidecar_and_refuses_larger_batches(tmp_path, monkeypatch):
    """On a machine with the TensorRT EP (faked here: this onnxruntime has none), the network's session is
    created with the profile that its sidecar's input shape gives (the .onnx itself, 1.2 GB for ViT-L, is
    not read for it), and a batch beyond the profile is refused before ORT sees it."""
    enc = seeded()
    path = tmp_path / "net.onnx"
    enc.export_onnx(path, check=False)  # network only, dynamic batch: a preprocessing session per camera size
    fake = FakeGpuOrt(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    import onnx

    monkeypatch.setattr(onnx, "load", lambda *a, **kw: pytest.fail("the .onnx file was read for its shapes"))
    be = OnnxBackend(path, PREP, device="cuda", trt=True, trt_max_batch=3)
    be.preprocess(torch.zeros(2, *CAMERA), PREP)
    (net,) = fake.with_provider("TensorrtExecutionProvider")
    trt = net["options"]["TensorrtExecutionProvider"]
    assert trt["trt_profile_min_shapes"] == "input:1x3x224x224" and trt["trt_profile_max_shapes"] == "input:3x3x224x224"
    assert trt["trt_engine_cache_enable"] and "trt_profile_min_shapes" not in net["options"]["CUDAExecutionProvider"]
    assert be.report().extra["tensorrt_max_batch"] == 3
    with pytest.raises(ValueError, match="larger than the TensorRT engine's profile"):
        be.run(torch.zeros(4, 3, 224, 224))
    with pytest.raises(ValueError, match="trt_max_batch must be >= 1"):
        OnnxBackend(path, PREP, trt_max_batch=0)


# --- the GPU branches, run on the CPU: IO binding everywhere, faked GPU providers -------------------------------


class FakeGpuOrt:
    """onnxruntime as a GPU machine shows it (providers faked): every session really runs on the CPU and
    records what it was given, and reports the providers it was asked for, as a working GPU build would."""

    def __init__(self, monkeypatch, providers=("TensorrtExecutionProvider", "CUDAExecutionProvider")):
        self.created: list[dict] = []
        real = ort.InferenceSession
        monkeypatch.setattr(ort, "get_available_providers", lambda: [*providers, "CPUExecutionProvider"])

        def session(model, so, providers, provider_options):
            self.created.append({"model": model, "options": dict(zip(providers, provider_options, strict=True))})
            sess = real(model, so, providers=["CPUExecutionProvider"])
            sess.get_providers = lambda: list(providers)
            return sess

        monkeypatch.setattr(ort, "InferenceSession", session)

    def with_provider(self, name: str) -> list[dict]:
        return [c for c in self.created if name in c["options"]]


def _float64_tensors(model) -> list[str]:
    """What in a graph (a path or serialized bytes) is float64: initializers, casts, constants, values."""
    import onnx

    proto = onnx.load(model) if isinstance(model, str) else onnx.load_from_string(model)
    g, double = proto.graph, onnx.TensorProto.DOUBLE
    found = [f"initializer {t.name}" for t in g.initializer if t.data_type == double]
    for n in g.node:
        for a in n.attribute:
            if (n.op_type == "Cast" and a.name == "to" and a.i == double) or (a.t and a.t.data_type == double):
                found.append(f"{n.op_type} {n.name}")
    found += [f"value {v.name}" for v in (*g.input, *g.output, *g.value_info)
              if v.type.tensor_type.elem_type == double]
    return found


RGBD_SIZE = (140, 196)  # a 10 x 14 patch grid: LingBot's small config in a fraction of a second


def _rgbd_frames(batch: int = 2):
    from defm_ros.preprocess.rgbd import pack
    from defm_ros.sample_data import sample_color

    rgb = sample_color(CAMERA, batch)[0]
    return pack(rgb, sample_depth(CAMERA, batch)[0])


def test_every_run_goes_through_io_binding_with_declared_buffers(monkeypatch, lingbot_ckpt):
    """The CPU runs the CUDA path's IO binding, so declared output shapes and dtypes are checked in CI: the
    RGB-D preprocessing graph makes 4 channels, and a buffer declared with 3 fails on any device."""
    calls = {"bound": 0}
    real_bound = ort.InferenceSession.run_with_iobinding

    def bound(self, *a, **kw):
        calls["bound"] += 1
        return real_bound(self, *a, **kw)

    ref = Encoder("lingbot_rgbd_vitl14", weights=lingbot_ckpt, input_size=RGBD_SIZE)
    enc = Encoder("lingbot_rgbd_vitl14", weights=lingbot_ckpt, backend="onnxruntime", input_size=RGBD_SIZE)  # exports
    monkeypatch.setattr(ort.InferenceSession, "run_with_iobinding", bound)
    monkeypatch.setattr(ort.InferenceSession, "run", lambda *a, **kw: pytest.fail("a run without IO binding"))
    x = _rgbd_frames()
    _assert_close(enc.encode(x), ref.encode(x))
    assert calls["bound"] == 2  # the preprocessing graph, then the network
    assert enc.preprocess(x).shape == (2, 4, *RGBD_SIZE)


def test_onnxruntime_gpu_beside_a_cpu_only_torch_runs_through_host_memory_loudly(monkeypatch, fused_file, frames,
                                                                                caplog):
    """The Jetson mistake: onnxruntime-gpu with a CPU-only torch. ORT keeps the GPU, frames stay in host
    memory (torch cannot hold CUDA tensors), and the info says so; strict refuses."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    FakeGpuOrt(monkeypatch, ("CUDAExecutionProvider",))
    path, ref = fused_file
    with caplog.at_level(logging.WARNING, logger="defm_ros"):
        enc = Encoder("defm_efficientnet_b0", weights=path, backend="onnxruntime", device="cuda")
    assert enc.device == torch.device("cpu")  # where frames go
    _assert_close(enc.encode(frames[1]), ref.encode(frames[1]))
    info = enc.info
    assert info["device"] == "cuda" and info["extra"]["io_device"] == "cpu"
    assert info["providers"][0] == "CUDAExecutionProvider"
    assert any("torch has no CUDA" in w and "host memory" in w for w in info["warnings"]), info["warnings"]
    assert "torch has no CUDA" in caplog.text
    with pytest.raises(DeviceUnavailableError, match="torch has no CUDA"):
        Encoder("defm_efficientnet_b0", weights=path, backend="onnxruntime", device="cuda", strict=True)


@pytest.mark.parametrize("model", ["defm_resnet18", "theia_tiny", "lingbot_rgbd_vitl14"])
def test_tensorrt_gets_no_preprocessing_and_no_float64(monkeypatch, tmp_path, model, lingbot_ckpt):
    """Preprocessing graphs hold float64 (colour, RGB-D) and values beyond fp16's range: TensorRT has no
    float64 and its fp16 flag would overflow. They run on the CUDA provider only; a file with its
    preprocessing fused in is not offered to TensorRT at all (a loud downgrade)."""
    from defm_ros.sample_data import sample_inputs

    rgbd = model.startswith("lingbot")
    enc = Encoder(model, weights=lingbot_ckpt, input_size=RGBD_SIZE) if rgbd else seeded(model)
    net_only, fused = tmp_path / "net.onnx", tmp_path / "fused.onnx"
    enc.export_onnx(net_only, check=False)
    enc.export_onnx(fused, camera_size=CAMERA, check=False)
    fake = FakeGpuOrt(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # buffers on the CPU; providers as on a GPU
    raw = torch.from_numpy(sample_inputs(enc.spec.modality, CAMERA, 2)[0])
    for path in (net_only, fused):
        run = Encoder(model, weights=path, backend="onnxruntime", device="cuda", precision="fp16", trt=True,
                      trt_cache_dir=tmp_path / "trt")
        run.encode(raw)
    trt = fake.with_provider("TensorrtExecutionProvider")
    assert len(trt) == 1 and trt[0]["model"] == str(net_only)  # the network-only file, nothing else
    for c in fake.created:
        if "TensorrtExecutionProvider" in c["options"]:
            assert _float64_tensors(c["model"]) == []
        else:
            assert list(c["options"]) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert len(fake.created) == 3  # the network on TensorRT, its preprocessing graph, the fused file
    assert any("fused" in w and "TensorRT" in w for w in run.info["warnings"]), run.info["warnings"]


def _trt_dir(fake: FakeGpuOrt) -> str:
    (c,) = fake.with_provider("TensorrtExecutionProvider")
    fake.created.clear()
    return c["options"]["TensorrtExecutionProvider"]["trt_engine_cache_path"]


def test_tensorrt_engine_cache_is_keyed_by_what_the_engine_depends_on(monkeypatch, tmp_path):
    """ORT names an engine by file name, tensor names and versions only: a re-export of other weights under
    the same name, or another profile or precision, must get its own engine, never the old one."""
    from filelock import FileLock, Timeout

    path, cache = tmp_path / "net.onnx", tmp_path / "trt"

    def export(seed: int, precision: str = "fp32") -> None:
        seeded(seed=seed).export_onnx(path, precision=precision, check=False)

    export(0)
    fake = FakeGpuOrt(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    held = []
    real = ort.InferenceSession

    def locked(model, so, providers, provider_options):  # is the engine folder locked while ORT builds?
        opts = dict(zip(providers, provider_options, strict=True)).get("TensorrtExecutionProvider")
        if opts is not None:
            try:
                FileLock(os.path.join(opts["trt_engine_cache_path"], ".lock")).acquire(timeout=0)
                held.append(False)
            except Timeout:
                held.append(True)
        return real(model, so, providers, provider_options)

    monkeypatch.setattr(ort, "InferenceSession", locked)

    def engine_dir(**kw) -> str:
        OnnxBackend(path, PREP, device="cuda", trt=True, trt_cache_dir=cache, **kw)
        return _trt_dir(fake)

    first = engine_dir()
    assert engine_dir() == first  # the same file and settings reuse their engine
    assert os.path.dirname(first) == str(cache)
    export(1)  # other weights, same file name
    other_weights = engine_dir()
    assert engine_dir(trt_max_batch=16) not in (first, other_weights)
    export(1, "fp16")
    assert engine_dir() not in (first, other_weights)
    assert other_weights != first and held and all(held)
    key = json.loads((tmp_path / "trt" / os.path.basename(first) / "key.json").read_text())
    assert {"onnx_sha256", "precision", "trt_max_batch", "tensorrt", "onnxruntime", "gpu"} <= set(key)


def test_close_drops_the_sessions_and_empties_torchs_cuda_cache(monkeypatch, fused_file):
    """Deactivate frees device memory: the IO-binding buffers and uploaded frames sit in torch's CUDA cache."""
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, as far as the backend can tell
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    FakeGpuOrt(monkeypatch, ("CUDAExecutionProvider",))
    path, _ = fused_file
    be = OnnxBackend(path, PREP, device="cuda")
    assert be.device == torch.device("cuda") and be.report().extra["io_device"] == "cuda"
    be.close()
    assert be.session is None and not be._pre and emptied == [1]
