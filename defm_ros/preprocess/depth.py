"""DeFM's metric-aware 3-channel log normalization, on torch tensors on the model's device.

Upstream builds three full-resolution channels in numpy, then resizes and standardizes them.
All three are affine in L = log1p(depth) (C2 after clipping L), and an antialiased bilinear resize
is linear with weights that sum to one, so resizing L and clip(L) and applying the affine maps
afterwards gives the same numbers (to float rounding) from a third less resize work and no
full-resolution 3-channel intermediates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DEFAULT_DEPTH_MODE, DEPTH_MODES, check_choice
from .base import InputGeometry, Preprocess
from .resize import BandedResize

MAX_DEPTH_C1 = 100.0
MAX_DEPTH_C2 = 9.0  # upstream trained with log(10) ~= log1p(9); keep 9, not 10


def relative_to_pseudo_metric(depth: torch.Tensor) -> torch.Tensor:
    """Monocular relative (inverse) depth -> the pseudo-metric depth DeFM was pretrained with."""
    d = torch.nan_to_num(depth.float(), nan=0.0, posinf=0.0, neginf=0.0)
    flat = d.flatten(-2)
    lo = flat.amin(-1)[..., None, None]
    hi = flat.amax(-1)[..., None, None]
    return 10.0 * torch.exp(-5.0 * ((d - lo) / (hi - lo + 1e-8)))


def normalize_depth(
    depth: torch.Tensor,
    geometry: InputGeometry,
    mean: Sequence[float],
    std: Sequence[float],
    mode: str = DEFAULT_DEPTH_MODE,
) -> torch.Tensor:
    """Depth (H, W) or (B, H, W) in metres -> normalized model input (B, 3, *geometry.padded), standardized
    by the DeFM family's `mean` and `std` (models.registry.FAMILIES)."""
    if depth.dim() == 2:
        depth = depth[None]
    if depth.dim() != 3:
        raise ValueError(f"depth must be (H, W) or (B, H, W), got shape {tuple(depth.shape)}")
    if check_choice("depth_mode", mode, DEPTH_MODES) == "relative":
        depth = relative_to_pseudo_metric(depth)
    d = torch.nan_to_num(depth.float(), nan=0.0, posinf=0.0, neginf=0.0)
    planes, lo, hi = log_planes(d)
    if tuple(planes.shape[-2:]) != geometry.resize:
        planes = F.interpolate(planes, size=geometry.resize, mode="bilinear", align_corners=False, antialias=True)
    return planes_to_input(planes, lo, hi, geometry, mean, std)


def log_planes(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Finite depth (B, H, W) -> the two planes to resize, L and clip(L), plus min and max of L per image."""
    log_d = torch.log1p(depth.clamp(0.0, MAX_DEPTH_C1))
    flat = log_d.flatten(1)
    planes = torch.stack((log_d, log_d.clamp(max=math.log1p(MAX_DEPTH_C2))), dim=1)
    return planes, flat.amin(1), flat.amax(1)


def planes_to_input(planes: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, geometry: InputGeometry,
                    mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Resized planes -> C1, C2, C3, standardized and padded: the network input (B, 3, *padded)."""
    span = hi - lo
    valid = span > 0
    inv_span = torch.where(valid, 1.0 / torch.where(valid, span, torch.ones_like(span)), torch.zeros_like(span))
    r, rc = planes[:, 0], planes[:, 1]
    c1 = r * (1.0 / math.log1p(MAX_DEPTH_C1))
    c2 = (rc * (1.0 / math.log1p(MAX_DEPTH_C2))).clamp(0.0, 1.0)
    c3 = (r - lo[:, None, None]) * inv_span[:, None, None]
    out = torch.stack([(c - m) / s for c, m, s in zip((c1, c2, c3), mean, std, strict=True)], dim=1)
    ph, pw = geometry.padded[0] - geometry.resize[0], geometry.padded[1] - geometry.resize[1]
    return F.pad(out, (0, pw, 0, ph)) if ph or pw else out


class GraphNormalize(nn.Module):
    """normalize_depth for one fixed camera size, in ops that export to few, fast ONNX nodes.

    Same arithmetic as normalize_depth, except: NaN/+-inf -> 0 is one Where (NaN < inf is false, -inf
    is clamped to 0 anyway), and the resize is banded constant matrix products (resize.py: ONNX Runtime
    spent 5-6 ms per 640x480 frame on dense ones, more than the rest of the graph).
    """

    def __init__(self, camera_size: tuple[int, int], geometry: InputGeometry, mean: Sequence[float],
                 std: Sequence[float], mode: str = DEFAULT_DEPTH_MODE) -> None:
        super().__init__()
        self.geometry, self.relative = geometry, check_choice("depth_mode", mode, DEPTH_MODES) == "relative"
        self.mean, self.std = tuple(mean), tuple(std)
        self.resize = BandedResize(camera_size, geometry.resize)

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        if self.relative:
            depth = relative_to_pseudo_metric(depth)
        planes, lo, hi = log_planes(torch.where(depth < math.inf, depth, torch.zeros_like(depth)))
        return planes_to_input(self.resize(planes), lo, hi, self.geometry, self.mean, self.std)


class DepthNormalize(nn.Module):
    """normalize_depth as a module (it holds nothing on a device): what a torch backend runs eagerly."""

    def __init__(self, prep: DepthPreprocess) -> None:
        super().__init__()
        self.prep = prep

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        p = self.prep
        return normalize_depth(depth, p.geometry, p.mean, p.std, p.mode)


@dataclass(frozen=True)
class DepthPreprocess(Preprocess):
    """Depth in metres (B, H, W) -> the DeFM network input: the Preprocess of depth models."""

    mode: str = DEFAULT_DEPTH_MODE
    input_name: ClassVar[str] = "depth"
    modality: ClassVar[str] = "depth"
    input_description: ClassVar[str] = "raw depth in metres (B, H, W)"
    net_channels: ClassVar[int] = 3
    raw_channels: ClassVar[int] = 0

    def module(self, camera_size: tuple[int, int], device: torch.device) -> nn.Module:
        """Eagerly, any camera size: torch's own antialiased resize (upstream's numbers)."""
        return DepthNormalize(self)

    def check(self, raw: torch.Tensor, model: str) -> None:
        if raw.dtype == torch.uint8:
            raise ValueError(f"{model} takes depth in metres (float), (H, W) or (B, H, W); got uint8 "
                             f"{tuple(raw.shape)} (a colour image? run a Theia model on it)")
        if raw.dim() not in (2, 3):
            raise ValueError(f"depth must be (H, W) or (B, H, W), got shape {tuple(raw.shape)}")

    def __str__(self) -> str:
        return f"the {self.mode} depth normalization to {self.geometry.resize[0]}x{self.geometry.resize[1]}"

    def fixed(self, camera_size: tuple[int, int]) -> nn.Module:
        return GraphNormalize(camera_size, self.geometry, self.mean, self.std, self.mode)

    @staticmethod
    def example(batch: int, camera_size: tuple[int, int]) -> torch.Tensor:
        return torch.rand(batch, *camera_size) * 5.0

    def describe(self) -> dict[str, Any]:
        return {"kind": "defm_metric_log3", "mean": list(self.mean), "std": list(self.std),
                "max_depth_c1": MAX_DEPTH_C1, "max_depth_c2": MAX_DEPTH_C2, "resize": "bilinear_antialias"}
