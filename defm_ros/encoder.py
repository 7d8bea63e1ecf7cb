"""Encoder: a model's input -> class token and dense feature map. The one public facade (SPEC §8).

Depth models (DeFM) take depth in metres; colour models (Theia) take uint8 RGB; RGB-D models (LingBot's
encoder) take aligned colour and depth, packed as float32 (H, W, 4) (preprocess.rgbd.pack). The
model's Preprocess (PREPROCESS, by modality, with its family's mean and std) turns it into the network
input on the model's device; passing one modality to a model of another is an error that says so.

Construction checks every option and loads the weights strictly, on the CPU; open() builds the
device backend and close() frees it again. A lifecycle node calls these in configure, activate and
deactivate (`lazy=True`); everyone else gets an opened Encoder from the constructor.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backends import Backend
from .backends.onnx_backend import OnnxBackend
from .backends.onnx_file import Frames, cached_export, check_sidecar, export_onnx, read_sidecar
from .backends.torch_backend import TorchBackend
from .config import (
    BACKEND_OPTIONS,
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_DENSE_LEVEL,
    DEFAULT_DEPTH_MODE,
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    DEFAULT_PRECISION,
    DEPTH_MODES,
    ONNX_PRECISIONS,
    PRECISIONS,
    check_choice,
    check_device,
    check_input_size,
)
from .info import StreamInfo
from .models import dense_stride, get_spec
from .models.weights import load_model
from .preprocess.base import InputGeometry, Preprocess
from .preprocess.color import ColorPreprocess
from .preprocess.depth import DepthPreprocess
from .preprocess.rgbd import RGBDPreprocess, pack
from .sample_data import sample_inputs

log = logging.getLogger("defm_ros")
RANDOM_WARNING = "RANDOM WEIGHTS: features are meaningless (smoke runs only)"
CHECK_CAMERA = (480, 640)  # the export self-check's frames without a camera size: RealSense/ZED VGA
PREPROCESS: dict[str, type[Preprocess]] = {"depth": DepthPreprocess, "color": ColorPreprocess, "rgbd": RGBDPreprocess}


@dataclass
class Features:
    """cls (B, C) and dense (B, C, h, w), float32, on the encoder's device."""

    cls: torch.Tensor
    dense: torch.Tensor

    def numpy(self, dtype: np.dtype | str = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(cls, dense) on the host, in `dtype` (float32 or float16): a half download is converted on the
        device first, so half the bytes cross to the host."""
        t = torch.float16 if np.dtype(dtype) == np.float16 else torch.float32
        return self.cls.detach().to(t).cpu().numpy(), self.dense.detach().to(t).cpu().numpy()


class Encoder:
    """A zoo variant with its weights, its preprocessing and one backend on one device.

    `weights`: None (resolve from models/, the HF cache or the Hub), a .pth path, "random", or for
    backend="onnxruntime" an exported .onnx file (see `defm-ros export`; `input_size` None takes the
    file's). `strict`: refuse a device,
    provider or precision that is not available instead of downgrading (loudly) to what is.
    `backend_options` go to the backend (config.BACKEND_OPTIONS lists what each takes).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        weights: str | os.PathLike | None = None,
        backend: str = DEFAULT_BACKEND,
        device: str = DEFAULT_DEVICE,
        input_size: tuple[int, int] | None = None,
        precision: str = DEFAULT_PRECISION,
        dense_level: str = DEFAULT_DENSE_LEVEL,
        depth_mode: str = DEFAULT_DEPTH_MODE,
        *,
        strict: bool = False,
        lazy: bool = False,
        **backend_options: Any,
    ) -> None:
        self.spec = spec = get_spec(model)
        self._backend_name = check_choice("backend", backend, BACKENDS)
        self._device = check_device(device)
        check_choice("precision", precision, ONNX_PRECISIONS if backend == "onnxruntime" else PRECISIONS)
        if unknown := sorted(set(backend_options) - set(BACKEND_OPTIONS[backend])):
            raise ValueError(f"backend {backend} takes the options {list(BACKEND_OPTIONS[backend])}, got {unknown}")
        self.depth_mode = check_choice("depth_mode", depth_mode, DEPTH_MODES)
        stride = dense_stride(spec, dense_level)
        onnx = Path(weights) if weights is not None and str(weights).endswith(".onnx") else None
        side = self._onnx_sidecar(onnx) if onnx is not None else None
        if input_size is None and side is not None:
            input_size = side["input_size"]  # an exported file: the size it was made for
        size = check_input_size(input_size) if input_size is not None else spec.default_size
        self.geometry = geom = InputGeometry.for_model(size, spec.align, pad=not spec.is_vit)
        if spec.modality != "depth" and depth_mode != DEFAULT_DEPTH_MODE:
            raise ValueError(f"depth_mode applies to depth models; {spec.name} takes {spec.modality}")
        self._prep = PREPROCESS[spec.modality](geom, spec.mean, spec.std)
        if spec.modality == "depth":
            self._prep = replace(self._prep, mode=depth_mode)
        self._valid = (-(-geom.resize[0] // stride), -(-geom.resize[1] // stride))
        self._strict, self._options = strict, backend_options
        self._base = StreamInfo(
            model=spec.name, family=spec.family, input_size=geom.resize, padded_size=geom.padded,
            stride=stride, dense_level="patch" if spec.is_vit else dense_level,
            dense_channels=spec.dense_dim, dense_size=self._valid, cls_channels=spec.cls_dim,
            depth_mode=depth_mode if spec.modality == "depth" else "", backend=backend, device=device,
            precision=precision, modality=spec.modality, license=spec.license, normalization=self._prep.describe())
        self.net: torch.nn.Module | None = None
        self._onnx: Path | None = None
        if side is not None:
            self._adopt_onnx(onnx, side)
        else:
            self.net = self._load(weights, dense_level)
        self.backend: Backend | None = None
        self.info_obj = self._base
        if not lazy:
            self.open()

    def _load(self, weights: str | os.PathLike | None, dense_level: str) -> torch.nn.Module:
        base, loaded = self._base, load_model(self.spec, weights, dense_level)
        if loaded.random:
            log.warning("%s: %s", self.spec.name, RANDOM_WARNING)
            base.random_weights = True
            base.warnings.append(RANDOM_WARNING)
        base.weights, base.checkpoint_sha256, base.checkpoint_skipped = loaded.weights, loaded.sha256, loaded.skipped
        if self.spec.fam.config_in_checkpoint:
            self._architecture(loaded.net.architecture())
        return loaded.net

    def _architecture(self, arch: dict[str, Any]) -> None:
        """A family whose checkpoints carry their architecture (LingBot) gives the stream its widths and the
        preprocessing it was trained with, from the checkpoint or from the file exported from one."""
        self._prep = self._prep.adopt(arch["normalization"])
        self._base.cls_channels, self._base.dense_channels = arch["cls_channels"], arch["dense_channels"]
        self._base.normalization = self._prep.describe()

    def _onnx_sidecar(self, path: Path) -> dict[str, Any]:
        """An exported file's sidecar (what it was made for), once the file can be run at all."""
        if self._backend_name != "onnxruntime":
            raise ValueError(f"{path} is an ONNX file: run it with backend onnxruntime, or pass the .pth checkpoint")
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {path} does not exist")
        return read_sidecar(path)

    def _adopt_onnx(self, path: Path, side: dict[str, Any]) -> None:
        """An exported file: check that it fits this stream, and take its provenance from the sidecar."""
        base = self._base
        if self.spec.fam.config_in_checkpoint:  # the architecture came with the checkpoint, and so with the file
            self._architecture(side)
        check_sidecar(side, base, path)
        base.weights, base.checkpoint_sha256 = side.get("weights", ""), side.get("checkpoint_sha256", "")
        base.random_weights = bool(side.get("random_weights"))
        base.warnings.extend(w for w in side.get("warnings", []) if w not in base.warnings)
        held = side["onnx"]["precision"]
        if held != base.precision:
            msg = f"{path.name} holds a {held} graph; running {held}, not the requested {base.precision}"
            log.warning(msg)
            base.warnings.append(msg)
            base.precision = held
        self._onnx = path

    # --- the device backend ---------------------------------------------------------------------
    def open(self) -> None:
        """Build the backend on the device (idempotent). Raises DeviceUnavailableError when strict."""
        if self.backend is not None:
            return
        base, opts = self._base, self._options
        if self._backend_name == "torch":
            backend: Backend = TorchBackend(self.net, self._device, base.precision, strict=self._strict, **opts)
        else:
            path = self._onnx or cached_export(self.net, base, self._prep, self._check_frames(None, None))
            backend = OnnxBackend(path, self._prep, self._device, strict=self._strict, **opts)
        r = backend.report()
        self.backend = backend
        self.info_obj = replace(base, backend=r.backend, device=r.device, precision=r.precision,
                                providers=r.providers, warnings=base.warnings + r.warnings, extra=r.extra)

    def close(self) -> None:
        """Free the backend and its device memory; the loaded weights stay for the next open()."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    @property
    def device(self) -> torch.device:
        """Where inputs go: the backend's device once open, else the requested one."""
        return self.backend.device if self.backend is not None else torch.device(self._device)

    @property
    def info(self) -> dict[str, Any]:
        """The dict published on ~/features/info (SPEC §5)."""
        return self.info_obj.to_dict()

    # --- encoding ---------------------------------------------------------------------------------
    def _ready(self) -> Backend:
        if self.backend is None:
            raise RuntimeError("the Encoder is closed (lazy=True or close()); call open() first")
        return self.backend

    def to_device(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The model's raw input as a tensor on its device, after checking it is this model's modality."""
        if isinstance(x, np.ndarray):  # a read-only view (of a message buffer) is copied: torch wants to own it
            x = np.ascontiguousarray(x) if x.flags.writeable else np.array(x)
        t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
        self._prep.check(t, self.spec.name)
        return t.to(self.device, non_blocking=True)

    def _preprocess_for(self, depth_mode: str | None) -> Preprocess:
        if depth_mode is None or depth_mode == self.depth_mode:
            return self._prep
        if self.spec.modality != "depth":
            raise ValueError(f"depth_mode applies to depth models; {self.spec.name} takes {self.spec.modality}")
        return replace(self._prep, mode=check_choice("depth_mode", depth_mode, DEPTH_MODES))

    def _batched(self, x: Any) -> torch.Tensor:
        if isinstance(x, tuple) and self.spec.modality == "rgbd":  # (rgb, depth_m): pack them, where they lie
            x = pack(*x)
        t = self.to_device(x)
        return t[None] if t.dim() == (3 if self._prep.raw_channels else 2) else t

    def preprocess(self, x: np.ndarray | torch.Tensor, depth_mode: str | None = None) -> torch.Tensor:
        """The model's input (depth in metres, or uint8 RGB) -> the network input, on the model's device."""
        return self._ready().preprocess(self._batched(x), self._preprocess_for(depth_mode))

    def encode(self, x: np.ndarray | torch.Tensor, depth_mode: str | None = None) -> Features:
        """One frame or a batch -> Features with a batch dim. Depth models: metres, (H, W) or (B, H, W);
        colour models: uint8 RGB, (H, W, 3) or (B, H, W, 3); RGB-D models: (rgb, depth_m) or packed
        (H, W, 4) / (B, H, W, 4); numpy or torch.

        `depth_mode` overrides a depth encoder's mode for this call ("relative" for monocular estimates).
        """
        backend = self._ready()
        cls, dense = backend.infer(self._batched(x), self._preprocess_for(depth_mode))
        h, w = self._valid
        return Features(cls, dense[:, :, :h, :w])

    def export_onnx(self, path: str | os.PathLike, *, camera_size: tuple[int, int] | None = None,
                    batch: int | None = None, precision: str = DEFAULT_PRECISION, check: bool = True) -> dict[str, Any]:
        """Write this encoder's network (and with `camera_size` its preprocessing) to an ONNX file plus
        its sidecar; see backends/onnx_file.export_onnx. Returns the sidecar."""
        if self.net is None:
            raise ValueError(f"this Encoder runs the exported file {self._onnx}; export from its checkpoint")
        info = replace(self._base, precision=check_choice("ONNX export precision", precision, ONNX_PRECISIONS))
        return export_onnx(self.net, info, self._prep, path, camera_size=camera_size, batch=batch,
                           precision=precision, frames=self._check_frames(camera_size, batch) if check else None)

    def _check_frames(self, camera_size: tuple[int, int] | None, batch: int | None) -> Frames:
        """What an export is checked on: the shared real frames where they are (else synthetic ones with
        NaN, inf and holes), at the camera size (VGA when the file takes the network input)."""
        return sample_inputs(self.spec.modality, tuple(camera_size or CHECK_CAMERA), batch or 2)

