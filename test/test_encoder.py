"""Encoder: options checked once, downgrades said out loud (or refused), random weights, cropping to the
valid dense map, per-call depth mode, and the lazy open/close a lifecycle node uses."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from defm_ros import Encoder
from defm_ros.backends import DeviceUnavailableError
from defm_ros.encoder import RANDOM_WARNING
from defm_ros.models.registry import FAMILIES
from defm_ros.preprocess.depth import InputGeometry, normalize_depth

from .helpers.encoders import seeded

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="the downgrade path needs a machine without CUDA")


def _depth(b: int = 2, h: int = 60, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0.3, 8.0, (b, h, w)).astype(np.float32)


def test_random_weights_say_so_everywhere(caplog):
    with caplog.at_level(logging.WARNING, logger="defm_ros"):
        info = seeded().info
    assert info["random_weights"] and info["weights"] == "random" and info["checkpoint_sha256"] == ""
    assert RANDOM_WARNING in info["warnings"] and RANDOM_WARNING in caplog.text


@no_cuda
def test_cuda_without_a_gpu_is_downgraded_loudly(caplog):
    with caplog.at_level(logging.WARNING, logger="defm_ros"):
        enc = seeded(device="cuda")
    assert enc.device == torch.device("cpu") and enc.info["device"] == "cpu"
    assert any("CUDA is not available" in w for w in enc.info["warnings"]) and "CUDA is not available" in caplog.text
    assert enc.encode(_depth()).cls.shape == (2, 512)


@no_cuda
def test_strict_refuses_the_downgrade_at_open():
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        seeded(device="cuda", strict=True)
    enc = seeded(device="cuda", strict=True, lazy=True)  # weights load fine; the device is activate's business
    with pytest.raises(DeviceUnavailableError):
        enc.open()
    assert enc.backend is None


def test_precision_downgrade_and_bf16_on_cpu():
    fp16 = seeded(precision="fp16")
    assert fp16.info["precision"] == "fp32" and any("fp16" in w for w in fp16.info["warnings"])
    bf16 = seeded(precision="bf16")
    out = bf16.encode(_depth())
    assert bf16.info["precision"] == "bf16" and out.cls.dtype == torch.float32
    ref = seeded().encode(_depth())
    assert (out.dense - ref.dense).abs().max() < 0.25  # bf16 keeps 8 bits of mantissa


@pytest.mark.parametrize(("model", "size", "padded", "dense"), [
    ("defm_resnet18", (200, 300), (224, 320), (13, 19)),  # CNN: pad to 32, crop the map to ceil(size / 16)
    ("defm_vit_s14", (230, 300), (224, 294), (16, 21)),  # ViT: crop the input to multiples of 14
])
def test_dense_map_is_cropped_to_the_valid_region(model, size, padded, dense):
    enc = seeded(model, input_size=size)
    assert tuple(enc.info["padded_size"]) == padded and tuple(enc.info["dense_size"]) == dense
    out = enc.encode(_depth())
    assert out.dense.shape[-2:] == dense
    x = normalize_depth(torch.from_numpy(_depth()), InputGeometry(enc.geometry.resize, enc.geometry.padded),
                       *FAMILIES["vit"].stats)
    _, full = enc.backend.run(x)  # the network's whole (padded) map: the crop is its top-left corner
    assert torch.equal(full[:, :, : dense[0], : dense[1]], out.dense)


def test_per_call_depth_mode_leaves_the_encoder_as_it_was():
    rel = _depth().clip(0, 1)
    enc, ref = seeded(), seeded(depth_mode="relative")
    assert torch.allclose(enc.encode(rel, depth_mode="relative").dense, ref.encode(rel).dense, atol=1e-6)
    assert enc.depth_mode == "metric" and not torch.allclose(enc.encode(rel).dense, ref.encode(rel).dense)
    with pytest.raises(ValueError, match="depth_mode"):
        enc.encode(rel, depth_mode="inverse")


def test_numpy_torch_single_and_batched_inputs_agree():
    enc, d = seeded(), _depth()
    batch = enc.encode(d)
    assert torch.allclose(enc.encode(torch.from_numpy(d)).cls, batch.cls)
    assert torch.allclose(enc.encode(d[1]).cls[0], batch.cls[1], atol=1e-6)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(B, H, W\)"):
        enc.encode(d[None])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"model": "defm_resnet19"}, "unknown model"),
    ({"backend": "tensorrt"}, "backend must be one of"),
    ({"precision": "fp64"}, "precision must be one of"),
    ({"backend": "onnxruntime", "precision": "bf16"}, r"precision must be one of \['fp32', 'fp16'\]"),
    ({"dense_level": "P6"}, "dense_level must be one of"),
    ({"depth_mode": "inverse"}, "depth_mode must be one of"),
    ({"device": "gpu"}, "cpu, cuda or cuda:N"),
    ({"input_size": (10, 224)}, "14 <= H, W <= 4096"),
    ({"weights": "model.onnx"}, "run it with backend onnxruntime"),
    ({"trt": True}, r"backend torch takes the options \['channels_last'"),  # an onnxruntime option, on torch
    ({"backend": "onnxruntime", "chanels_last": True}, r"takes the options .*, got \['chanels_last'\]"),
])
def test_bad_options_are_refused_before_anything_loads(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Encoder(**{"weights": "random", **kwargs})


def test_lazy_open_close_reopen():
    enc = seeded(lazy=True)
    assert enc.backend is None and enc.info["backend"] == "torch"
    with pytest.raises(RuntimeError, match="closed"):
        enc.encode(_depth())
    enc.open()
    first = enc.encode(_depth())
    enc.open()  # idempotent
    enc.close()
    assert enc.backend is None and next(enc.net.parameters()).device.type == "cpu"
    enc.open()
    assert torch.equal(enc.encode(_depth()).dense, first.dense)


def test_the_wrong_modality_is_a_clear_error():
    depth, theia = seeded(), seeded("theia_tiny")
    rgb = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="takes depth in metres.*a colour image\\? run a Theia model"):
        depth.encode(rgb)
    with pytest.raises(ValueError, match="theia_tiny takes uint8 RGB.*depth\\? run a DeFM model"):
        theia.encode(_depth()[0])
    with pytest.raises(ValueError, match="takes uint8 RGB"):
        theia.encode(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="depth_mode applies to depth models"):
        theia.encode(rgb, depth_mode="relative")
    with pytest.raises(ValueError, match="depth_mode applies to depth models"):
        Encoder("theia_tiny", weights="random", depth_mode="relative")
    assert theia.encode(rgb).dense.shape == (1, 192, 14, 14) and theia.info["depth_mode"] == ""


def test_theia_crops_other_sizes_to_its_patch_grid():
    enc = seeded("theia_tiny", input_size=(230, 330))
    assert tuple(enc.info["input_size"]) == (224, 320) and tuple(enc.info["dense_size"]) == (14, 20)
    assert enc.encode(np.zeros((2, 48, 64, 3), np.uint8)).dense.shape == (2, 192, 14, 20)


# --- no trip through host memory for what lies on the device -------------------------------------------------


def test_half_features_are_converted_before_the_download():
    feats = seeded().encode(_depth())
    cls, dense = feats.numpy("float16")
    assert cls.dtype == dense.dtype == np.float16
    want_cls, want_dense = feats.numpy()
    assert np.array_equal(cls, want_cls.astype(np.float16)) and np.array_equal(dense, want_dense.astype(np.float16))


def test_an_rgbd_pair_of_tensors_is_packed_where_it_lies(tmp_path, monkeypatch):
    """(rgb, depth) tensors on the GPU are packed on the GPU: neither goes to host memory and back."""
    from defm_ros.preprocess.rgbd import pack

    from .helpers.checkpoints import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "model.pt", "lingbot_rgbd_vitl14")
    enc = Encoder("lingbot_rgbd_vitl14", weights=ckpt, input_size=(56, 70))
    rng = np.random.default_rng(0)
    rgb, depth = rng.integers(0, 256, (2, 60, 80, 3), dtype=np.uint8), _depth()
    want = enc.encode(pack(rgb, depth))
    monkeypatch.setattr(torch.Tensor, "numpy", lambda *a, **kw: pytest.fail("a tensor went through numpy"))
    got = enc.encode((torch.from_numpy(rgb), torch.from_numpy(depth)))
    assert torch.equal(got.cls, want.cls) and torch.equal(got.dense, want.dense)
    with pytest.raises(ValueError, match="not aligned"):
        pack(torch.from_numpy(rgb), torch.from_numpy(depth[:, ::2]))
    with pytest.raises(ValueError, match="uint8 RGB"):
        pack(torch.from_numpy(rgb).float(), torch.from_numpy(depth))


def test_an_rgbd_checkpoint_brings_its_own_image_mean_and_std(tmp_path):
    """LingBot's model.pt holds the image mean and std it was trained with: the Encoder's preprocessing, its
    stream description and an exported file take them from there (the family's ImageNet pair is the default)."""
    from defm_ros.models.registry import FAMILIES
    from defm_ros.preprocess.rgbd import pack

    from .helpers.checkpoints import save_lingbot, write_checkpoint

    plain = write_checkpoint(tmp_path / "plain.pt", "lingbot_rgbd_vitl14")
    ckpt = torch.load(plain, weights_only=True)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    ckpt["model"]["encoder.image_mean"] = torch.tensor(mean).view(1, 3, 1, 1)
    ckpt["model"]["encoder.image_std"] = torch.tensor(std).view(1, 3, 1, 1)
    own = save_lingbot(ckpt["model"], ckpt["model_config"], tmp_path / "own.pt")
    a, b = (Encoder("lingbot_rgbd_vitl14", weights=p, input_size=(56, 70)) for p in (plain, own))
    assert a.info["normalization"]["mean"] == list(FAMILIES["lingbot"].mean)
    assert np.allclose(b.info["normalization"]["mean"], mean) and np.allclose(b.info["normalization"]["std"], std)
    rng = np.random.default_rng(1)
    frame = pack(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), _depth()[0])
    x = torch.from_numpy(frame)[None]
    want = (x[..., :3].permute(0, 3, 1, 2) / 255.0 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1)
    got = b.preprocess(frame)[:, :3]
    assert torch.allclose(got, torch.nn.functional.interpolate(want, got.shape[-2:], mode="bilinear",
                                                                 align_corners=False, antialias=True), atol=1e-5)
    assert not torch.equal(a.encode(frame).cls, b.encode(frame).cls)
    side = b.export_onnx(tmp_path / "own.onnx", check=False)
    assert np.allclose(side["normalization"]["mean"], mean)
    assert np.allclose(Encoder("lingbot_rgbd_vitl14", weights=tmp_path / "own.onnx",
                               backend="onnxruntime").info["normalization"]["std"], std)
