"""Refiner: raw sensor depth + aligned colour -> complete metric depth and its validity mask (SPEC §8),
by LingBot-Depth (robbyant/lingbot-depth, Apache-2.0).

Real RealSense/ZED depth has holes, flying pixels and noise on glass and dark surfaces (10-36 % of
invalid pixels in our frames); the refiner fills and cleans it from the colour image. Like the
Encoder, construction checks every option and loads the weights strictly (the architecture from the
checkpoint's own model_config); open() moves the model to its device, close() frees it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .backends.torch_backend import autocast, pick_device, pick_precision
from .config import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    DEFAULT_REFINER,
    DEFAULT_TOKENS,
    PRECISIONS,
    check_choice,
    check_device,
)
from .models.lingbot import token_grid
from .models.registry import REFINERS, get_spec
from .models.weights import load_model

log = logging.getLogger("defm_ros")
RANDOM_WARNING = "RANDOM WEIGHTS: refined depth is meaningless (smoke runs only)"
MASK_THRESHOLD = 0.5


@dataclass
class Refined:
    """depth (B, H, W) float32 metres, NaN where the mask says invalid (REP 118's "no return");
    mask (B, H, W) bool; points (B, H, W, 3) metres in the camera frame, when intrinsics were given."""

    depth: torch.Tensor
    mask: torch.Tensor
    points: torch.Tensor | None = None

    def squeeze(self) -> Refined:
        return Refined(self.depth[0], self.mask[0], None if self.points is None else self.points[0])


def _batched(x: Any, dims: int, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, bool]:
    t = torch.from_numpy(np.array(x)) if isinstance(x, np.ndarray) else torch.as_tensor(x)
    single = t.dim() == dims
    t = t[None] if single else t
    return (t if dtype is None else t.to(dtype)), single


class Refiner:
    """LingBot-Depth on one device. `weights`: None (models/<name>/model.pt, the HF cache, the Hub), a
    model.pt path, or "random" (an assumed ViT-L config, for smoke runs). `num_tokens`: the patch count
    upstream takes (1200..3600; more is finer and slower). `precision`: fp32, or fp16/bf16 autocast;
    upstream's infer(use_fp16=True) is bf16 autocast, i.e. our "bf16". `strict`: refuse a device or
    precision that is not available instead of downgrading (loudly)."""

    def __init__(self, model: str = DEFAULT_REFINER, weights: str | os.PathLike | None = None,
                 device: str = DEFAULT_DEVICE, precision: str = DEFAULT_PRECISION, num_tokens: int = DEFAULT_TOKENS,
                 *, strict: bool = False, lazy: bool = False) -> None:
        self.spec = spec = get_spec(model, REFINERS)
        self._device, self._precision = check_device(device), check_choice("precision", precision, PRECISIONS)
        if not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"num_tokens must be a positive integer (upstream: 1200..3600), got {num_tokens!r}")
        self.num_tokens, self._strict = num_tokens, strict
        self.info: dict[str, Any] = {"model": spec.name, "license": spec.license, "num_tokens": num_tokens,
                                     "weights": "", "checkpoint_sha256": "", "random_weights": False,
                                     "checkpoint_skipped": {}, "warnings": []}
        loaded = load_model(spec, weights)
        self.net = loaded.net
        self.info.update(weights=loaded.weights, checkpoint_sha256=loaded.sha256, random_weights=loaded.random,
                         checkpoint_skipped=loaded.skipped)
        if loaded.random:
            log.warning("%s: %s", spec.name, RANDOM_WARNING)
            self.info["warnings"].append(RANDOM_WARNING)
        self.net.eval().requires_grad_(False)
        self.device: torch.device | None = None
        if not lazy:
            self.open()

    def open(self) -> None:
        """Move the model to its device (a downgrade is said in the log and info["warnings"])."""
        if self.device is not None:
            return
        warnings = self.info["warnings"]
        self.device = pick_device(torch.device(self._device), self._strict, warnings)
        self.precision = pick_precision(self._precision, self.device, self._strict, warnings)
        self.net.to(self.device)
        self.info.update(device=str(self.device), precision=self.precision)

    def close(self) -> None:
        """Free the device memory; the weights stay on the CPU for the next open()."""
        if self.device is not None:
            self.net.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.device = None

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid a height x width frame is encoded at: upstream's num_tokens at its aspect."""
        return token_grid(self.num_tokens, height, width)

    def refine(self, rgb: Any, depth_m: Any, intrinsics: Any = None) -> Refined:
        """uint8 RGB (H, W, 3) or (B, H, W, 3), depth in metres (H, W) or (B, H, W) (0 or NaN: no
        depth), intrinsics None or a 3x3 camera matrix in pixels (or (B, 3, 3)) -> Refined."""
        if self.device is None:
            raise RuntimeError("the Refiner is closed (lazy=True or close()); call open() first")
        rgb_t, single = _batched(rgb, 3)
        if rgb_t.dtype != torch.uint8 or rgb_t.shape[-1] != 3:
            raise ValueError(f"colour must be uint8 RGB (H, W, 3) or (B, H, W, 3), got {rgb_t.dtype} "
                             f"{tuple(rgb_t.shape)}")
        depth_t, _ = _batched(depth_m, 2, torch.float32)
        if tuple(depth_t.shape) != tuple(rgb_t.shape[:-1]):
            raise ValueError(f"colour {tuple(rgb_t.shape[1:-1])} and depth {tuple(depth_t.shape[1:])} are not "
                             "aligned: refine takes depth registered to the colour image, at its size")
        image = rgb_t.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        depth_t = depth_t.to(self.device)
        h, w = depth_t.shape[-2:]
        rows, cols = self.grid(h, w)
        with torch.inference_mode(), autocast(self.precision, self.device):
            depth, prob = self.net(image, depth_t, rows, cols)
        depth, mask = depth.float(), prob.float() > MASK_THRESHOLD
        points = None if intrinsics is None else _points(depth, torch.as_tensor(intrinsics, dtype=torch.float32,
                                                                                 device=self.device))
        nan = torch.tensor(float("nan"), device=self.device)
        out = Refined(torch.where(mask, depth, nan), mask,
                      None if points is None else torch.where(mask[..., None], points, nan))
        return out.squeeze() if single else out

    def refine_packed(self, rgbd: np.ndarray | torch.Tensor, intrinsics: Any = None) -> Refined:
        """A packed RGB-D batch (preprocess.rgbd.pack, (B, H, W, 4)) -> Refined, on this device
        (refine_for_encoder is the step the node and extraction take with it)."""
        rgb = rgbd[..., :3]
        return self.refine(rgb.astype(np.uint8) if isinstance(rgb, np.ndarray) else rgb.to(torch.uint8), rgbd[..., 3],
                           intrinsics)


def refine_for_encoder(refiner: Refiner, rgbd: np.ndarray | torch.Tensor, intrinsics: Sequence[Any] = ()
                       ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """The refine step of the node and extraction alike: a packed RGB-D batch -> (the refined depth where it lies,
    for the depth encoder to take without a round trip through host memory; its host copy and mask, (B, H, W),
    for each frame's refined-depth topics or dataset fields; each frame's points (H, W, 3), or None).

    `intrinsics`: per frame, its 3x3 pixel camera matrix or None; empty: no frame's points. Points cost a
    back-projection and a copy to the host, so the callers ask only for the frames whose points are wanted."""
    batch = len(rgbd)
    want = [k for k in range(batch) if k < len(intrinsics) and intrinsics[k] is not None]
    ks = None
    if want:  # the frames without camera matrix are back-projected with NaN, and their points dropped
        ks = np.full((batch, 3, 3), np.nan, np.float32)
        for k in want:
            ks[k] = np.asarray(intrinsics[k], np.float32).reshape(3, 3)
    out = refiner.refine_packed(rgbd, ks)
    points: list[np.ndarray | None] = [None] * batch
    if out.points is not None:  # only the wanted frames' points cross to the host
        for k, host in zip(want, out.points[want].cpu().numpy(), strict=True):
            points[k] = host
    return out.depth, out.depth.cpu().numpy(), out.mask.cpu().numpy(), points


def _points(depth: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Back-projection of (B, H, W) depth with pixel intrinsics (3, 3) or (B, 3, 3) -> (B, H, W, 3)."""
    if tuple(k.shape[-2:]) != (3, 3) or k.dim() not in (2, 3) or (k.dim() == 3 and k.shape[0] != depth.shape[0]):
        raise ValueError(f"intrinsics must be a 3x3 camera matrix (or one per frame), got {tuple(k.shape)}")
    k = k.expand(depth.shape[0], 3, 3) if k.dim() == 2 else k
    h, w = depth.shape[-2:]
    v, u = torch.meshgrid(torch.arange(h, device=depth.device, dtype=torch.float32),
                          torch.arange(w, device=depth.device, dtype=torch.float32), indexing="ij")
    fx, fy, cx, cy = (k[:, i, j].view(-1, 1, 1) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    return torch.stack(((u - cx) * depth / fx, (v - cy) * depth / fy, depth), dim=-1)
