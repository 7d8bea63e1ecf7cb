"""PyTorch eager (optionally compiled) inference, fp32 or autocast fp16/bf16."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..choices import DEFAULT_PRECISION
from .base import Backend, BackendReport, downgrade

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
    if precision == "fp16" and device.type == "cpu":
        downgrade("precision fp16 requested on cpu, which has no fast fp16 kernels; running fp32", strict, warnings)
        return "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = AUTOCAST.get(precision)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


class TorchBackend(Backend):
    """Moves `model` to `device` (in place) and runs it there; close() moves it back to the CPU.

    A device or precision that cannot be had is downgraded loudly (report().warnings), or refused
    with DeviceUnavailableError when `strict`.
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        precision: str = DEFAULT_PRECISION,
        channels_last: bool = False,
        compile: bool = False,
        strict: bool = False,
    ) -> None:
        self.strict, self.warnings = strict, []
        self.device = pick_device(torch.device(device), strict, self.warnings)
        self.precision = pick_precision(precision, self.device, strict, self.warnings)
        self.channels_last = channels_last
        self.model = model.eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._forward = torch.compile(self.model) if compile else self.model
        self.compiled = compile

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
                                    "torch": torch.__version__})

    def close(self) -> None:
        self.model.to("cpu", memory_format=torch.contiguous_format)
        self._forward = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
