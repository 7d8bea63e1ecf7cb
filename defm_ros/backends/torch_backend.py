"""PyTorch eager (optionally compiled) inference, fp32 or autocast fp16/bf16."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..config import DEFAULT_PRECISION
from ..models import use_fused_attention
from .base import Backend, BackendReport, Preprocess, downgrade

AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(dev: torch.device, strict: bool, warnings: list[str]) -> torch.device:
    """The device to run on: the requested one, or (loudly) the CPU / cuda:0 when it cannot be had."""
    if dev.type == "cuda" and not torch.cuda.is_available():
        downgrade(f"device {dev} requested but CUDA is not available; running on cpu", strict, warnings)
        return torch.device("cpu")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        downgrade(f"device {dev} requested but only {torch.cuda.device_count()} GPU(s) exist; running on cuda:0",
                  strict, warnings)
        return torch.device("cuda", 0)
    return dev


def pick_precision(precision: str, device: torch.device, strict: bool, warnings: list[str]) -> str:
    """The precision to run in: the requested one, or (loudly) fp32 where it would be slower than fp32.

    CUDA GPUs before Ampere (Turing, Volta, Jetson Xavier) only emulate bf16; torch asks the current device.
    """
    if precision == "fp16" and device.type == "cpu":
        downgrade("precision fp16 requested on cpu, which has no fast fp16 kernels; running fp32", strict, warnings)
        return "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        downgrade(f"precision bf16 requested on {device}, where bf16 is emulated (a GPU before Ampere) and fp16 "
                  "runs natively; running fp32", strict, warnings)
        return "fp32"
    return precision


def set_tf32(device: torch.device, precision: str, tf32: bool) -> bool:
    """Whether CUDA matmuls and convolutions may use TF32 (a 10-bit mantissa), set for the process: cuDNN's
    default would make fp32 features differ from the CPU's by ~1e-3. Only fp32 on CUDA is affected."""
    if device.type != "cuda" or precision != "fp32":
        return False
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    return tf32


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = AUTOCAST.get(precision)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


class TorchBackend(Backend):
    """Moves `model` to `device` (in place) and runs it there; close() moves it back to the CPU.

    A device or precision that cannot be had is downgraded loudly (report().warnings), or refused
    with DeviceUnavailableError when `strict`. `fused_attention`: SDPA kernels for the ViTs' attention
    (None: on CUDA, where they are fast; the CPU keeps upstream's exact op order). `tf32`: let fp32 on
    CUDA use TF32 (faster, ~1e-3 off the CPU's features; set process-wide).
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        precision: str = DEFAULT_PRECISION,
        channels_last: bool = False,
        compile: bool = False,
        fused_attention: bool | None = None,
        tf32: bool = False,
        strict: bool = False,
    ) -> None:
        self.strict, self.warnings = strict, []
        self.device = pick_device(torch.device(device), strict, self.warnings)
        self.precision = pick_precision(precision, self.device, strict, self.warnings)
        self.channels_last = channels_last
        self.fused_attention = self.device.type == "cuda" if fused_attention is None else fused_attention
        self.tf32 = set_tf32(self.device, self.precision, tf32)
        self.model = model.eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        use_fused_attention(self.model, self.fused_attention)
        self._forward = torch.compile(self.model) if compile else self.model
        self.compiled = compile
        self._pre: dict[tuple[Preprocess, tuple[int, int]], nn.Module] = {}

    def preprocess(self, raw: torch.Tensor, prep: Preprocess) -> torch.Tensor:
        """Raw input -> network input, by the preprocessing module of its camera size (kept while open)."""
        key = (prep, prep.raw_size(raw))
        module = self._pre.get(key)
        if module is None:
            module = self._pre[key] = prep.module(key[1], self.device)
        return module(raw)

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.precision, self.device):
            cls, dense = self._forward(x)
        return cls.float(), dense.float()

    def report(self) -> BackendReport:
        return BackendReport(backend=self.name, device=str(self.device), precision=self.precision,
                             warnings=list(self.warnings),
                             extra={"channels_last": self.channels_last, "compiled": self.compiled,
                                    "fused_attention": self.fused_attention, "tf32": self.tf32,
                                    "torch": torch.__version__})

    def close(self) -> None:
        """The model back on the CPU as it was given (contiguous, explicit attention); device memory freed."""
        self.model.to("cpu", memory_format=torch.contiguous_format)
        use_fused_attention(self.model, False)
        self._forward = None
        self._pre.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
