"""TorchBackend: autocast dtypes, channels_last, float32 outputs, downgrades (loud or strict), close()."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from defm_ros.backends import DeviceUnavailableError
from defm_ros.backends.torch_backend import TorchBackend


class Probe(nn.Module):
    """Records the dtype the convolution computes in and the memory format of the input it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.seen: dict = {}

    def forward(self, x):
        self.seen["channels_last"] = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        y = self.conv(x)
        self.seen["compute"] = y.dtype
        return y.mean(dim=(2, 3)), y


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_autocast_dtypes_and_float32_outputs(precision, dtype):
    net = Probe()
    be = TorchBackend(net, "cpu", precision)
    cls, dense = be.run(torch.rand(2, 3, 16, 16))
    assert net.seen["compute"] == dtype
    assert cls.dtype == dense.dtype == torch.float32 and dense.shape == (2, 4, 14, 14)
    assert be.report().precision == precision and be.report().warnings == []


def test_fp16_on_cpu_is_a_loud_downgrade_or_refused_when_strict(caplog):
    with caplog.at_level(logging.WARNING, logger="defm_ros"):
        be = TorchBackend(Probe(), "cpu", "fp16")
    assert be.report().precision == "fp32" and "no fast fp16 kernels" in be.report().warnings[0]
    assert "no fast fp16 kernels" in caplog.text
    with pytest.raises(DeviceUnavailableError, match="strict"):
        TorchBackend(Probe(), "cpu", "fp16", strict=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the downgrade path needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_loud_downgrade_or_refused_when_strict():
    be = TorchBackend(Probe(), "cuda", "fp32")
    assert be.device == torch.device("cpu") and be.report().device == "cpu"
    assert "CUDA is not available" in be.report().warnings[0]
    with pytest.raises(DeviceUnavailableError, match="device cuda:1 requested but CUDA is not available"):
        TorchBackend(Probe(), "cuda:1", "fp32", strict=True)


def test_channels_last_reaches_the_network_and_gives_the_same_numbers():
    torch.manual_seed(0)
    net = Probe()
    x = torch.rand(2, 3, 16, 16)
    ref = TorchBackend(net, "cpu").run(x)
    assert net.seen["channels_last"] is False
    be = TorchBackend(net, "cpu", channels_last=True)
    got = be.run(x)
    assert net.seen["channels_last"] is True and be.report().extra["channels_last"] is True
    assert torch.allclose(ref[0], got[0], atol=1e-6) and torch.allclose(ref[1], got[1], atol=1e-6)


def test_weights_are_frozen_and_close_gives_the_model_back_on_the_cpu():
    net = Probe()
    be = TorchBackend(net, "cpu", channels_last=True)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    be.close()
    assert next(net.parameters()).device.type == "cpu" and net.conv.weight.is_contiguous()
