"""Inference backends: each takes a normalized (B, 3, H, W) tensor and returns (cls, dense)."""

from __future__ import annotations

from typing import Protocol

import torch

BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "fp16", "bf16")


class Backend(Protocol):
    name: str
    device: torch.device  # where inputs must live; preprocessing runs here too

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def describe(self) -> dict: ...
