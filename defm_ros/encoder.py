"""Encoder: depth in metres -> DeFM class token and dense feature map. The one public facade."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backends import BACKENDS, PRECISIONS
from .info import StreamInfo
from .models import build_model, dense_stride, get_spec
from .models.checkpoints import RANDOM, file_sha256, load_strict, read_state_dict, resolve_weights
from .normalize import DEPTH_MODES, InputGeometry, normalize_depth

log = logging.getLogger("defm_ros")
RANDOM_WARNING = "RANDOM WEIGHTS: features are meaningless (smoke runs only)"


@dataclass
class Features:
    """cls (B, C) and dense (B, C, h, w), float32, on the encoder's device."""

    cls: torch.Tensor
    dense: torch.Tensor

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        return self.cls.detach().cpu().numpy(), self.dense.detach().cpu().numpy()


def _pick_device(device: str, warnings: list[str]) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = f"device {device!r} requested but CUDA is not available; running on cpu"
        log.warning(msg)
        warnings.append(msg)
        return torch.device("cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda[:N], got {device!r}")
    return dev


def _pick_precision(precision: str, device: torch.device, warnings: list[str]) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        msg = "precision fp16 requested on cpu, which has no fast fp16 kernels; running fp32"
        log.warning(msg)
        warnings.append(msg)
        return "fp32"
    return precision


class Encoder:
    """Builds the model, loads its weights strictly and runs normalization + inference on one device.

    `weights`: None (resolve from models/, the HF cache or the Hub), a .pth path, or "random".
    For backend="onnxruntime", `weights` may also be an exported .onnx file (see `defm-ros export`).
    """

    def __init__(
        self,
        model: str = "defm_resnet18",
        weights: str | os.PathLike | None = None,
        backend: str = "torch",
        device: str = "cpu",
        input_size: tuple[int, int] = (224, 224),
        precision: str = "fp32",
        dense_level: str = "P4",
        depth_mode: str = "metric",
        **backend_options: Any,
    ) -> None:
        self.spec = spec = get_spec(model)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if depth_mode not in DEPTH_MODES:
            raise ValueError(f"depth_mode must be one of {DEPTH_MODES}, got {depth_mode!r}")
        if len(tuple(input_size)) != 2 or min(input_size) < spec.align:
            raise ValueError(f"input_size must be (H, W), each >= {spec.align}, got {input_size!r}")
        stride = dense_stride(spec, dense_level)
        self.geometry = geom = InputGeometry.for_model(tuple(input_size), spec.align, pad=not spec.is_vit)
        self.depth_mode = depth_mode
        warnings: list[str] = []
        self.device = _pick_device(device, warnings)
        precision = _pick_precision(precision, self.device, warnings)
        self._valid = (-(-geom.resize[0] // stride), -(-geom.resize[1] // stride))
        self.info_obj = StreamInfo(
            model=spec.name, family=spec.family, input_size=geom.resize, padded_size=geom.padded,
            stride=stride, dense_level="patch" if spec.is_vit else dense_level,
            dense_channels=spec.dense_dim, dense_size=self._valid, cls_channels=spec.cls_dim,
            depth_mode=depth_mode, backend=backend, device=str(self.device), precision=precision,
            warnings=warnings,
        )
        if backend == "onnxruntime" and weights is not None and str(weights).endswith(".onnx"):
            onnx_path = Path(weights)
        else:
            net = self._load_torch_model(weights, dense_level)
            onnx_path = None
        if backend == "torch":
            from .backends.torch_backend import TorchBackend

            self.backend = TorchBackend(net, self.device, precision, **backend_options)
        else:
            from .backends.onnx_backend import OnnxBackend, onnx_for_encoder

            if onnx_path is None:
                onnx_path = onnx_for_encoder(net, self.info_obj)
            self.backend = OnnxBackend(onnx_path, self.info_obj, **backend_options)
        self.info_obj.extra.update(self.backend.describe())

    def _load_torch_model(self, weights: str | os.PathLike | None, dense_level: str) -> torch.nn.Module:
        net = build_model(self.spec.name, dense_level=dense_level)
        info = self.info_obj
        if weights is not None and str(weights) == RANDOM:
            log.warning("%s: %s", self.spec.name, RANDOM_WARNING)
            info.random_weights, info.weights = True, RANDOM
            info.warnings.append(RANDOM_WARNING)
            return net
        path = resolve_weights(self.spec, weights)
        load_strict(net, read_state_dict(path), self.spec, str(path))
        info.weights, info.checkpoint_sha256 = str(path), file_sha256(path)
        return net

    @property
    def info(self) -> dict[str, Any]:
        """The dict published on ~/features/info (SPEC §5)."""
        return self.info_obj.to_dict()

    def to_device(self, depth_m: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(depth_m)) if isinstance(depth_m, np.ndarray) else depth_m
        if t.dim() not in (2, 3):
            raise ValueError(f"depth must be (H, W) or (B, H, W), got shape {tuple(t.shape)}")
        return t.to(self.device, non_blocking=True)

    def preprocess(self, depth_m: np.ndarray | torch.Tensor, depth_mode: str | None = None) -> torch.Tensor:
        """Depth in metres -> the normalized network input, on the model's device."""
        return normalize_depth(self.to_device(depth_m), self.geometry, depth_mode or self.depth_mode)

    def encode(self, depth_m: np.ndarray | torch.Tensor, depth_mode: str | None = None) -> Features:
        """Depth in metres, (H, W) or (B, H, W), numpy or torch -> Features with a batch dim.

        `depth_mode` overrides the encoder's mode for this call ("relative" for monocular estimates).
        """
        if getattr(self.backend, "takes_depth", False) and (depth_mode or self.depth_mode) == self.depth_mode:
            cls, dense = self.backend.run_depth(self.to_device(depth_m))  # it normalizes inside its own graph
        else:
            cls, dense = self.backend.run(self.preprocess(depth_m, depth_mode))
        h, w = self._valid
        return Features(cls, dense[:, :, :h, :w])
