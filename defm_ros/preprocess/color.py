"""Theia's input as its image processor made it in training: transformers' ViTImageProcessor for
`facebook/deit-*-patch16-224` (size 224, mean = std = 0.5, PIL bilinear resampling).

uint8 RGB is squashed to the input size (no crop) with PIL's bilinear resample, reproduced exactly on
any device and in exported graphs (resize.PilBilinear), then rescaled by 1/255 and standardized:
x / 127.5 - 1. These are not ImageNet's mean and std.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .depth import InputGeometry
from .resize import PilBilinear

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
RESCALE = 1.0 / 255.0


class ColorNormalize(nn.Module):
    """uint8 RGB (B, H, W, 3) of one camera size -> the network input (B, 3, *size), float32."""

    def __init__(self, camera_size: tuple[int, int], size: tuple[int, int]) -> None:
        super().__init__()
        self.resize = PilBilinear(camera_size, size)
        self.register_buffer("mean", torch.tensor(MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(3, 1, 1), persistent=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = (self.resize(rgb.permute(0, 3, 1, 2).to(torch.float64)) * RESCALE).float()  # rescale in float64
        return (x - self.mean) / self.std  # then normalize in float32, as the processor does


@dataclass(frozen=True)
class ColorPreprocess:
    """uint8 RGB (B, H, W, 3) -> Theia's network input: the Preprocess of colour models."""

    geometry: InputGeometry
    input_name: ClassVar[str] = "image"
    modality: ClassVar[str] = "color"
    input_description: ClassVar[str] = "uint8 RGB (B, H, W, 3)"
    net_channels: ClassVar[int] = 3

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.module(self.raw_size(rgb), rgb.device)(rgb)

    def module(self, camera_size: tuple[int, int], device: torch.device) -> nn.Module:
        norm = ColorNormalize(tuple(camera_size), self.geometry.resize).to(device)
        norm.resize.to_device(torch.device(device))
        return norm

    def __str__(self) -> str:
        return f"the ViT image processor to {self.geometry.resize[0]}x{self.geometry.resize[1]}"

    @staticmethod
    def raw_size(raw: torch.Tensor) -> tuple[int, int]:
        return int(raw.shape[-3]), int(raw.shape[-2])

    def fixed(self, camera_size: tuple[int, int]) -> nn.Module:
        return ColorNormalize(tuple(camera_size), self.geometry.resize)

    @staticmethod
    def example(batch: int, camera_size: tuple[int, int]) -> torch.Tensor:
        return torch.randint(0, 256, (batch, *camera_size, 3), dtype=torch.uint8)

    @staticmethod
    def describe() -> dict[str, Any]:
        return {"kind": "vit_image_processor", "mean": list(MEAN), "std": list(STD), "rescale": RESCALE,
                "resize": "PIL bilinear (exact), no crop", "input": "uint8 RGB"}
