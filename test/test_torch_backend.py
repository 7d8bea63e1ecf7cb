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


class Plain(nn.Module):
    """A network without side effects in forward (Probe records, which torch.compile guards on)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
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


@pytest.mark.parametrize("native", [False, True])
def test_bf16_where_the_gpu_only_emulates_it_is_a_loud_downgrade_or_refused_when_strict(native, monkeypatch):
    """GPUs before Ampere (Turing, Volta, Jetson Xavier) emulate bf16, slower than fp32, and run fp16 natively."""
    from defm_ros.backends.torch_backend import pick_precision

    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: asked.append(including_emulation) or native)
    cuda, warnings = torch.device("cuda"), []
    if native:
        assert pick_precision("bf16", cuda, True, warnings) == "bf16" and warnings == []
    else:
        assert pick_precision("bf16", cuda, False, warnings) == "fp32"
        assert "bf16 is emulated" in warnings[0] and "fp16 runs natively" in warnings[0]
        with pytest.raises(DeviceUnavailableError, match="bf16 is emulated.*fp16 runs natively.*strict"):
            pick_precision("bf16", cuda, True, [])
    assert asked and not any(asked)  # emulation is not support
    assert pick_precision("fp16", cuda, True, []) == "fp16"


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


# --- the GPU branches, run on the CPU ---------------------------------------------------------------------------


def test_fp16_autocast_path_runs_on_the_cpu(monkeypatch):
    """The CPU downgrades fp16 (slow kernels); with the downgrade lifted, the autocast path a GPU runs is the
    one that runs here: float16 compute, float32 outputs."""
    import defm_ros.backends.torch_backend as tb

    monkeypatch.setattr(tb, "pick_precision", lambda precision, *_: precision)
    net = Probe()
    cls, dense = TorchBackend(net, "cpu", "fp16").run(torch.rand(2, 3, 16, 16))
    assert net.seen["compute"] == torch.float16 and cls.dtype == dense.dtype == torch.float32


@pytest.mark.parametrize("model", ["defm_vit_s14", "theia_tiny"])
def test_fused_attention_is_a_flag_and_equals_the_explicit_form(model, monkeypatch):
    """SDPA (flash / memory-efficient kernels on a GPU) is chosen by a flag, not by x.is_cuda, so its parity
    with the explicit form (upstream's op order, exact on the CPU) is tested here."""
    from defm_ros import Encoder
    from defm_ros.sample_data import sample_inputs

    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(1) or sdpa(*a, **kw))
    torch.manual_seed(0)
    explicit = Encoder(model, weights="random")
    modality = explicit.spec.modality
    x = sample_inputs(modality, (240, 320), 2)[0]
    want = explicit.encode(x)
    assert calls == [] and explicit.info["extra"]["fused_attention"] is False  # the CPU's default
    explicit.close()
    torch.manual_seed(0)
    fused = Encoder(model, weights="random", fused_attention=True)
    got = fused.encode(x)
    assert len(calls) == 12 and fused.info["extra"]["fused_attention"] is True  # one per block
    assert (got.cls - want.cls).abs().max() <= 1e-5 and (got.dense - want.dense).abs().max() <= 1e-5
    fused.close()
    assert not any(getattr(m, "fused_attention", False) for m in fused.net.modules())  # left as found


def test_close_leaves_no_preprocessing_on_the_device(monkeypatch):
    """Deactivate frees device memory: the colour normaliser (band matrices on the device) is the backend's,
    per camera size, and goes with it; nothing module-wide keeps it."""
    import gc
    import weakref

    from defm_ros import Encoder
    from defm_ros.preprocess import color as color_preprocess
    from defm_ros.sample_data import sample_color

    made = []
    init = color_preprocess.ColorNormalize.__init__

    def record(self, *a, **kw):
        init(self, *a, **kw)
        made.append(weakref.ref(self))

    monkeypatch.setattr(color_preprocess.ColorNormalize, "__init__", record)
    enc = Encoder("theia_tiny", weights="random")
    rgb = sample_color((240, 320), 1)[0]
    enc.encode(rgb)
    enc.encode(rgb)
    assert len(made) == 1  # built once per camera size while open
    enc.close()
    gc.collect()
    assert all(r() is None for r in made)
    enc.open()
    enc.encode(rgb)
    assert len(made) == 2


def test_reopening_a_compiled_model_does_not_recompile(monkeypatch):
    """Deactivate/activate keeps what torch.compile made: the second open runs the first one's graph
    (dynamo's counters; the eager backend stands in for inductor to keep this fast)."""
    from torch._dynamo.utils import counters

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kw: real(module, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    net, x = Plain(), torch.rand(1, 3, 16, 16)
    for _ in range(3):
        be = TorchBackend(net, "cpu", compile=True, channels_last=True)
        be.run(x)
        be.close()
    assert counters["stats"]["unique_graphs"] == 1


def test_fp32_on_cuda_is_true_fp32_unless_tf32_is_asked_for():
    """cuDNN convolutions default to TF32 (10-bit mantissa): fp32 features would then differ from the CPU's by
    ~1e-3. fp32 on CUDA turns TF32 off for matmuls and convolutions; tf32=True turns it on."""
    from defm_ros.backends.torch_backend import set_tf32

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        assert set_tf32(torch.device("cuda"), "fp32", False) is False
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert set_tf32(torch.device("cuda"), "fp32", True) is True
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert set_tf32(torch.device("cpu"), "fp32", True) is False  # no such thing on the CPU: untouched
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
