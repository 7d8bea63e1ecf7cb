"""LingBot-Depth's input: aligned colour and depth resized to the patch grid, colour standardized with
the family's mean and std, depth cleaned (NaN/inf/<= 1 cm -> empty) and log-remapped, as upstream's
RGB-D encoder does. Frames travel as one float32 (H, W, 4) array: RGB (0..255) and depth in metres
(pack), so that the Encoder, the node and the backends move one input per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Preprocess
from .resize import BandedResize

DEPTH_MIN = 0.01  # metres: below is no depth
REMAPS = ("log", "linear")


def pack(rgb: Any, depth: Any) -> np.ndarray | torch.Tensor:
    """uint8 RGB (..., H, W, 3) and depth in metres (..., H, W) -> float32 (..., H, W, 4). Arrays give an
    array; torch tensors give a tensor on the colour's device (GPU frames never go through host memory)."""
    if isinstance(rgb, torch.Tensor) or isinstance(depth, torch.Tensor):
        rgb = torch.as_tensor(rgb)
        depth = torch.as_tensor(depth, device=rgb.device).float()
        _check_aligned(rgb.dtype == torch.uint8, rgb, depth)
        return torch.cat((rgb.float(), depth[..., None]), dim=-1)
    rgb, depth = np.asarray(rgb), np.asarray(depth, dtype=np.float32)
    _check_aligned(rgb.dtype == np.uint8, rgb, depth)
    return np.concatenate([rgb.astype(np.float32), depth[..., None]], axis=-1)


def _check_aligned(uint8: bool, rgb: Any, depth: Any) -> None:
    if not uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"colour must be uint8 RGB (..., H, W, 3), got {rgb.dtype} {tuple(rgb.shape)}")
    if tuple(rgb.shape[:-1]) != tuple(depth.shape):
        raise ValueError(f"colour {tuple(rgb.shape[:-1])} and depth {tuple(depth.shape)} are not aligned "
                         "(different sizes)")


def prepare(image: torch.Tensor, depth: torch.Tensor, size: tuple[int, int], remap: str,
            mean: torch.Tensor, std: torch.Tensor,
            resize: tuple[Callable, Callable] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """image (B, 3, H, W) in [0, 1], depth (B, 1, H, W) metres -> both at `size`: the standardized image
    (antialiased bilinear) and the remapped depth (nearest; empty pixels 0). `resize`: exportable
    (image, depth) resizers for one fixed camera size, with the same numbers."""
    if resize is None:
        img = F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)
        d = F.interpolate(depth, size, mode="nearest")
    else:
        img, d = resize[0](image), resize[1](depth)
    img = (img - mean) / std
    d = torch.where(torch.isfinite(d), d, torch.zeros_like(d))
    valid = d > DEPTH_MIN
    d = d * valid
    if remap == "log":
        d = torch.where(valid, torch.log(torch.where(valid, d, torch.ones_like(d))), torch.zeros_like(d))
    elif remap != "linear":
        raise ValueError(f"remap_depth_in must be one of {list(REMAPS)}, got {remap!r}")
    return img, d


class NearestResize(nn.Module):
    """torch's `nearest` resize of the last two dims for one fixed size, as index gathers (exportable)."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        super().__init__()
        grid = torch.arange(in_size[0] * in_size[1], dtype=torch.float32).reshape(1, 1, *in_size)
        picked = F.interpolate(grid, out_size, mode="nearest")[0, 0].long()
        self.rows, self.cols = picked[:, 0] // in_size[1], picked[0] % in_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-2, self.rows.to(x.device)).index_select(-1, self.cols.to(x.device))


class RGBDNormalize(nn.Module):
    """Packed RGB-D (B, H, W, 4) of one camera size -> the network input (B, 4, *size)."""

    def __init__(self, camera_size: tuple[int, int] | None, size: tuple[int, int], remap: str,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.size, self.remap = size, remap
        self.resize = None if camera_size is None else (BandedResize(camera_size, size),
                                                        NearestResize(camera_size, size))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, rgbd: torch.Tensor) -> torch.Tensor:
        x = rgbd.permute(0, 3, 1, 2)
        img, d = prepare(x[:, :3] / 255.0, x[:, 3:], self.size, self.remap, self.mean, self.std, self.resize)
        return torch.cat((img, d), dim=1)


@dataclass(frozen=True)
class RGBDPreprocess(Preprocess):
    """Packed RGB-D (B, H, W, 4) -> LingBot's network input (B, 4, *size): the Preprocess of RGB-D models."""

    remap: str = "log"
    input_name: ClassVar[str] = "rgbd"
    modality: ClassVar[str] = "rgbd"
    input_description: ClassVar[str] = "float32 (B, H, W, 4): RGB 0..255 and depth in metres, aligned"
    net_channels: ClassVar[int] = 4
    raw_channels: ClassVar[int] = 4

    def module(self, camera_size: tuple[int, int], device: torch.device) -> nn.Module:
        """Eagerly, torch's own resizes of any camera size (upstream's numbers), not fixed matrices."""
        return RGBDNormalize(None, self.geometry.resize, self.remap, self.mean, self.std).to(device)

    def check(self, raw: torch.Tensor, model: str) -> None:
        if not raw.is_floating_point() or raw.dim() not in (3, 4) or raw.shape[-1] != 4:
            raise ValueError(f"{model} takes aligned colour and depth: encode((rgb, depth_m)), or float32 "
                             f"(H, W, 4) / (B, H, W, 4) from preprocess.rgbd.pack; got {raw.dtype} {tuple(raw.shape)}")

    def __str__(self) -> str:
        return f"the RGB-D preparation to {self.geometry.resize[0]}x{self.geometry.resize[1]}"

    def fixed(self, camera_size: tuple[int, int]) -> nn.Module:
        return RGBDNormalize(tuple(camera_size), self.geometry.resize, self.remap, self.mean, self.std)

    @staticmethod
    def example(batch: int, camera_size: tuple[int, int]) -> torch.Tensor:
        rgb = torch.randint(0, 256, (batch, *camera_size, 3)).float()
        return torch.cat((rgb, torch.rand(batch, *camera_size, 1) * 5.0), dim=-1)

    def adopt(self, normalization: dict[str, Any]) -> RGBDPreprocess:
        return replace(super().adopt(normalization), remap=normalization["remap_depth_in"])

    def describe(self) -> dict[str, Any]:
        return {"kind": "lingbot_rgbd", "mean": list(self.mean), "std": list(self.std), "depth_min": DEPTH_MIN,
                "remap_depth_in": self.remap, "image_resize": "bilinear_antialias", "depth_resize": "nearest",
                "input": "RGB 0..255 + depth metres, packed (H, W, 4)"}
