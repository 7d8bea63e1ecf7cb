"""PyTorch eager (optionally compiled) inference, fp32 or autocast fp16/bf16."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.model = model.eval().to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._forward = torch.compile(self.model) if compile else self.model
        self.compiled = compile
        self._dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

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

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "device": str(self.device),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compiled": self.compiled,
            "torch": torch.__version__,
        }
