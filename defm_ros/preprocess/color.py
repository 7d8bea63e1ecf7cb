"""Theia's input as its image processor made it in training: transformers' ViTImageProcessor for
`facebook/deit-*-patch16-224` (size 224, PIL bilinear resampling, the family's mean and std).

uint8 RGB is squashed to the input size (no crop) with PIL's bilinear resample, reproduced exactly on
any device and in exported graphs (resize.PilBilinear), then rescaled by 1/255 and standardized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .base import Preprocess
from .resize import PilBilinear

RESCALE = 1.0 / 255.0


class ColorNormalize(nn.Module):
    """uint8 RGB (B, H, W, 3) of one camera size -> the network input (B, 3, *size), float32."""

    def __init__(self, camera_size: tuple[int, int], size: tuple[int, int], mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__()
        self.resize = PilBilinear(camera_size, size)
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1), persistent=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = (self.resize(rgb.permute(0, 3, 1, 2).to(torch.float64)) * RESCALE).float()  # rescale in float64
        return (x - self.mean) / self.std  # then normalize in float32, as the processor does


@dataclass(frozen=True)
class ColorPreprocess(Preprocess):
    """uint8 RGB (B, H, W, 3) -> Theia's network input: the Preprocess of colour models."""

    input_name: ClassVar[str] = "image"
    modality: ClassVar[str] = "color"
    input_description: ClassVar[str] = "uint8 RGB (B, H, W, 3)"
    net_channels: ClassVar[int] = 3
    raw_channels: ClassVar[int] = 3

    def module(self, camera_size: tuple[int, int], device: torch.device) -> nn.Module:
        norm = self.fixed(camera_size).to(device)
        norm.resize.to_device(torch.device(device))
        return norm

    def check(self, raw: torch.Tensor, model: str) -> None:
        if raw.dtype != torch.uint8 or raw.dim() not in (3, 4) or raw.shape[-1] != 3:
            hint = " (depth? run a DeFM model on it)" if raw.is_floating_point() or raw.dim() == 2 else ""
            raise ValueError(f"{model} takes uint8 RGB, (H, W, 3) or (B, H, W, 3); got {raw.dtype} "
                             f"{tuple(raw.shape)}{hint}")

    def __str__(self) -> str:
        return f"the ViT image processor to {self.geometry.resize[0]}x{self.geometry.resize[1]}"

    def fixed(self, camera_size: tuple[int, int]) -> nn.Module:
        return ColorNormalize(tuple(camera_size), self.geometry.resize, self.mean, self.std)

    @staticmethod
    def example(batch: int, camera_size: tuple[int, int]) -> torch.Tensor:
        return torch.randint(0, 256, (batch, *camera_size, 3), dtype=torch.uint8)

    def describe(self) -> dict[str, Any]:
        return {"kind": "vit_image_processor", "mean": list(self.mean), "std": list(self.std), "rescale": RESCALE,
                "resize": "PIL bilinear (exact), no crop", "input": "uint8 RGB"}
