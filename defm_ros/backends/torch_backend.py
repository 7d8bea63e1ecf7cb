"""PyTorch eager (optionally compiled) inference, fp32 or autocast fp16/bf16."""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

from ..choices import DEFAULT_PRECISION
from .base import Backend, BackendReport, DeviceUnavailableError

log = logging.getLogger("defm_ros")
AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


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
        self.device = self._pick_device(torch.device(device))
        self.precision = self._pick_precision(precision)
        self.channels_last = channels_last
        self.model = model.eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._forward = torch.compile(self.model) if compile else self.model
        self.compiled = compile
        self._dtype = AUTOCAST.get(self.precision)

    def _downgrade(self, msg: str) -> None:
        if self.strict:
            raise DeviceUnavailableError(msg.split(";")[0] + " (strict: not falling back)")
        log.warning(msg)
        self.warnings.append(msg)

    def _pick_device(self, dev: torch.device) -> torch.device:
        if dev.type == "cuda" and not torch.cuda.is_available():
            self._downgrade(f"device {dev} requested but CUDA is not available; running on cpu")
            return torch.device("cpu")
        if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
            self._downgrade(f"device {dev} requested but only {torch.cuda.device_count()} GPU(s) exist; "
                            "running on cuda:0")
            return torch.device("cuda", 0)
        return dev

    def _pick_precision(self, precision: str) -> str:
        if precision == "fp16" and self.device.type == "cpu":
            self._downgrade("precision fp16 requested on cpu, which has no fast fp16 kernels; running fp32")
            return "fp32"
        return precision

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._dtype)

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
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
