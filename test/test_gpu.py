"""The torch paths on a real GPU (marked gpu): parity with the CPU, memory given back at close, half outputs
converted on the device, RGB-D pairs packed there. They import no ROS, so bench/gpu_check.sh runs them on the
lent machine; GPU_CHECK_DEVICE=cpu runs them on the CPU (the script's rehearsal), where they test the plumbing
only. Without a GPU (and without that variable) they skip, saying why."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import torch

from defm_ros import Encoder, Refiner
from defm_ros.sample_data import sample_inputs

from .helpers.encoders import seeded

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                                  reason="needs a CUDA GPU (or GPU_CHECK_DEVICE=cpu)")]


def _pair(model: str, **kw) -> tuple[Encoder, Encoder]:
    return seeded(model, **kw), seeded(model, device=DEVICE, **kw)


@pytest.mark.parametrize("model", ["defm_resnet18", "defm_efficientnet_b0", "defm_vit_s14", "theia_tiny"])
def test_fp32_on_the_device_equals_the_cpu(model):
    """fp32 means fp32: TF32 is off, and the fused attention kernels agree with the explicit form."""
    ref, enc = _pair(model, input_size=(240, 320))
    x = sample_inputs(ref.spec.modality, (480, 640), 2)[0]
    want, got = ref.encode(x), enc.encode(torch.from_numpy(x).to(enc.device))
    assert got.cls.device.type == DEVICE and enc.info["precision"] == "fp32"
    assert (got.cls.cpu() - want.cls).abs().max() <= 1e-4 and (got.dense.cpu() - want.dense).abs().max() <= 1e-4


def test_close_gives_the_device_memory_back():
    if DEVICE != "cuda":
        pytest.skip("device memory is a CUDA figure")
    torch.ones(8, 8, device="cuda") @ torch.ones(8, 8, device="cuda")  # cuBLAS's workspace, kept for the process
    gc.collect()
    torch.cuda.empty_cache()
    before, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    enc = seeded("theia_small", device="cuda", lazy=True)
    rgb = sample_inputs("color", (480, 640), 2)[0]
    for _ in range(2):  # activate, deactivate, twice
        enc.open()
        enc.encode(rgb)
        assert torch.cuda.memory_allocated() > before
        enc.close()
        assert torch.cuda.memory_allocated() == before and torch.cuda.memory_reserved() <= reserved


def test_half_features_are_converted_on_the_device():
    _, enc = _pair("defm_resnet18")
    feats = enc.encode(sample_inputs("depth", (480, 640), 2)[0])
    cls, dense = feats.numpy("float16")
    assert dense.dtype == np.float16 and np.array_equal(dense, feats.dense.float().cpu().numpy().astype(np.float16))
    assert np.array_equal(cls, feats.cls.float().cpu().numpy().astype(np.float16))


def test_refiner_bf16_on_the_device_stays_near_fp32_on_the_cpu(tmp_path):
    from .helpers.checkpoints import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "model.pt", "lingbot_depth_vitl14")
    rgbd = sample_inputs("rgbd", (240, 320), 1)[0][0]
    rgb, depth = rgbd[..., :3].astype(np.uint8), rgbd[..., 3]
    want = Refiner(weights=ckpt, num_tokens=300).refine(rgb, depth)
    got = Refiner(weights=ckpt, device=DEVICE, precision="bf16", num_tokens=300).refine(rgb, depth)
    assert got.depth.device.type == DEVICE
    both = got.mask.cpu() & want.mask
    assert both.float().mean() > 0.5 * want.mask.float().mean()
    assert ((got.depth.cpu()[both] - want.depth[both]).abs() / want.depth[both]).max() <= 0.1
