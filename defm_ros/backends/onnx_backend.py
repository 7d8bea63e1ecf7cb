"""ONNX Runtime inference on the CPU, CUDA or TensorRT execution provider.

The backend takes raw depth (`takes_depth`): the normalization runs as an ONNX graph too, so a frame
costs ONNX Runtime calls only, with no torch kernels (and no torch threads fighting ORT's for the
cores). A file exported with its normalization (`defm-ros export --camera-size`) is one call for its
camera size; a network-only file gets a small normalization session per camera size on first use.

A provider that was asked for and cannot be had is never dropped silently: the downgrade is logged as
a warning and recorded in info.warnings, and info.providers names the providers really in use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..info import StreamInfo
from .export import DEPTH_INPUT, NET_INPUT, OUTPUT_NAMES, export_onnx, normalization_graph, read_sidecar, sidecar_path

log = logging.getLogger("defm_ros")

CPU_EP, CUDA_EP, TRT_EP = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
# What a file must agree on with the stream it is asked to serve; anything else would mislabel features.
SIDECAR_KEYS = ("model", "input_size", "padded_size", "stride", "dense_level", "dense_channels", "cls_channels")


def cache_dir() -> Path:
    """$DEFM_ROS_CACHE, else $XDG_CACHE_HOME/defm_ros (~/.cache/defm_ros)."""
    env = os.environ.get("DEFM_ROS_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "defm_ros"


def _weights_key(net: nn.Module, info: StreamInfo) -> str:
    """The checkpoint's hash, or for random weights a hash of the tensors (each run draws new ones)."""
    if info.checkpoint_sha256 and not info.random_weights:
        return info.checkpoint_sha256[:16]
    h = hashlib.sha256()
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def onnx_for_encoder(net: nn.Module, info: StreamInfo) -> Path:
    """Export the loaded network once per model/weights/size/precision (dynamic batch) and reuse it.

    Files live in cache_dir()/onnx; the sidecar is written last, so a file without one is redone.
    """
    if info.precision not in ("fp32", "fp16"):
        raise ValueError(f"the onnxruntime backend runs fp32 or fp16, not {info.precision}; use the torch backend "
                         "for bf16")
    h, w = info.input_size
    key = f"{info.model}-{info.dense_level}-{h}x{w}-{info.precision}-{_weights_key(net, info)}"
    path = cache_dir() / "onnx" / f"{key}.onnx"
    if path.is_file() and sidecar_path(path).is_file():
        log.info("using cached ONNX export %s", path)
        return path
    log.info("exporting %s to %s (once; later starts reuse it)", info.model, path)
    export_onnx(net, info, path, batch=None, precision=info.precision)
    return path


def _check_sidecar(side: dict[str, Any], info: StreamInfo, path: Path) -> None:
    """Refuse a file made for another model, size or head; adopt its provenance (weights, hash)."""
    wanted = info.to_dict()
    keys = SIDECAR_KEYS + (("depth_mode",) if side["onnx"]["normalization_in_graph"] else ())
    wrong = [f"{k} {side.get(k)!r} (requested {wanted[k]!r})" for k in keys if side.get(k) != wanted[k]]
    if wrong:
        raise ValueError(f"{path} does not fit the requested stream: it was exported with " + ", ".join(wrong)
                         + "; re-export it with `defm-ros export` or request what it was made for")
    if not info.weights:
        info.weights = side.get("weights", "")
        info.checkpoint_sha256 = side.get("checkpoint_sha256", "")
        info.random_weights = bool(side.get("random_weights"))
        info.warnings.extend(w for w in side.get("warnings", []) if w not in info.warnings)
    precision = side["onnx"]["precision"]
    if precision != info.precision:
        msg = f"{path.name} holds a {precision} graph; running {precision}, not the requested {info.precision}"
        log.warning(msg)
        info.warnings.append(msg)
        info.precision = precision


def _batched(depth: torch.Tensor) -> torch.Tensor:
    if depth.dim() == 2:
        depth = depth[None]
    if depth.dim() != 3:
        raise ValueError(f"depth must be (H, W) or (B, H, W), got shape {tuple(depth.shape)}")
    return depth


class OnnxBackend:
    name = "onnxruntime"
    takes_depth = True  # Encoder hands raw depth to run_depth(); run() takes normalized input

    def __init__(
        self,
        path: str | os.PathLike,
        info: StreamInfo,
        device: str | torch.device | None = None,
        trt: bool = False,
        trt_cache_dir: str | os.PathLike | None = None,
        threads: int = 0,
        spin: bool = True,
    ) -> None:
        """`threads`: ORT intra-op threads (0: one per physical core). `spin`: worker threads busy-wait
        between the ops of a run, and sleep as soon as it returns (ORT's own default spins between runs
        too). On a 2-core VM, waking a sleeping thread for each op made ResNet-18's encode erratic
        (33-48 ms against 27-32 ms spinning); inside defm_node at 30 Hz, sharing the cores with a
        camera, both settings gave the same rate within noise (bench/RESULTS.md)."""
        import onnxruntime as ort

        self._ort = ort
        self.path, self.info = Path(path), info
        side = read_sidecar(self.path)
        self.meta = side["onnx"]
        _check_sidecar(side, info, self.path)
        self.device = torch.device(device if device is not None else info.device)
        self.threads, self.spin, self.trt = threads, spin, trt
        self.trt_cache_dir = Path(trt_cache_dir) if trt_cache_dir else cache_dir() / "trt"
        self._providers = self._pick_providers()
        self.session = self._session(str(self.path))
        self.providers = self.session.get_providers()
        self._check_providers()
        info.providers, info.device = list(self.providers), str(self.device)
        self.camera_size = tuple(self.meta["camera_size"]) if self.meta["normalization_in_graph"] else None
        self._input_name = self.session.get_inputs()[0].name
        self._pre: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()

    def _warn(self, msg: str) -> None:
        log.warning(msg)
        self.info.warnings.append(msg)

    def _pick_providers(self) -> list[tuple[str, dict[str, Any]]]:
        available = self._ort.get_available_providers()
        chosen: list[tuple[str, dict[str, Any]]] = []
        if self.device.type == "cuda":
            idx = self.device.index or 0
            if self.trt and TRT_EP in available:
                self.trt_cache_dir.mkdir(parents=True, exist_ok=True)
                chosen.append((TRT_EP, {
                    "device_id": idx,
                    "trt_fp16_enable": self.info.precision == "fp16",
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(self.trt_cache_dir),
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": str(self.trt_cache_dir),
                }))
            elif self.trt:
                self._warn(f"TensorRT requested but onnxruntime {self._ort.__version__} has no {TRT_EP} (needs "
                           "onnxruntime-gpu and the TensorRT libraries); using CUDA without TensorRT")
            if CUDA_EP in available:
                chosen.append((CUDA_EP, {"device_id": idx}))
            else:
                self._warn(f"device {self.device} requested but onnxruntime has no {CUDA_EP} "
                           "(pip install onnxruntime-gpu); running on cpu")
                self.device = torch.device("cpu")
        elif self.trt:
            self._warn("TensorRT needs device cuda; running on cpu without it")
        chosen.append((CPU_EP, {}))
        return chosen

    def _check_providers(self) -> None:
        """ORT falls back to the CPU when a GPU provider fails to load (missing CUDA/cuDNN libraries)."""
        missing = [name for name, _ in self._providers if name not in self.providers]
        if missing:
            self._warn(f"onnxruntime could not start {', '.join(missing)} (see its log above); "
                       f"running on {', '.join(self.providers)}")
        if CUDA_EP not in self.providers and TRT_EP not in self.providers:
            self.device = torch.device("cpu")

    def _session(self, model: str | bytes) -> Any:
        so = self._ort.SessionOptions()
        so.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.threads
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            so.add_session_config_entry(key, "1" if self.spin else "0")
        if self.spin:  # spin between the ops of one run only, never between frames
            so.add_session_config_entry("session.force_spinning_stop", "1")
        return self._ort.InferenceSession(model, so, providers=[n for n, _ in self._providers],
                                          provider_options=[o for _, o in self._providers])

    def _pre_session(self, camera_size: tuple[int, int]) -> Any:
        """The normalization graph for one camera size, built on first use (a fraction of a second)."""
        with self._lock:
            if camera_size not in self._pre:
                log.info("building the normalization graph for %dx%d depth", *camera_size)
                graph = normalization_graph(self.info, camera_size)
                self._pre[camera_size] = self._session(graph.SerializeToString())
            return self._pre[camera_size]

    def _call(self, sess: Any, name: str, x: torch.Tensor, outputs: dict[str, tuple[int, ...]]) -> list[torch.Tensor]:
        """One ORT run. On CUDA the tensors stay on the GPU (IO binding into torch-owned memory)."""
        if self.device.type == "cpu":
            got = sess.run(list(outputs), {name: x.detach().cpu().float().contiguous().numpy()})
            return [torch.from_numpy(g) for g in got]
        x = x.detach().to(self.device, torch.float32).contiguous()
        idx = self.device.index or 0
        binding = sess.io_binding()
        binding.bind_input(name, "cuda", idx, np.float32, tuple(x.shape), x.data_ptr())
        outs = [torch.empty(shape, dtype=torch.float32, device=self.device) for shape in outputs.values()]
        for out_name, t in zip(outputs, outs, strict=True):
            binding.bind_output(out_name, "cuda", idx, np.float32, tuple(t.shape), t.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # torch's kernels wrote x on their own stream
        sess.run_with_iobinding(binding)
        return outs

    def _check_batch(self, b: int) -> None:
        fixed = self.meta["batch"]
        if fixed is not None and b != fixed:
            raise ValueError(f"{self.path.name} was exported for batch {fixed}, got {b}; export with --dynamic-batch")

    def _net_outputs(self, b: int) -> dict[str, tuple[int, ...]]:
        i = self.info
        hw = (i.padded_size[0] // i.stride, i.padded_size[1] // i.stride)
        return {OUTPUT_NAMES[0]: (b, i.cls_channels), OUTPUT_NAMES[1]: (b, i.dense_channels, *hw)}

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized (B, 3, H, W) input, as from normalize_depth."""
        if self.camera_size is not None:
            raise ValueError(f"{self.path.name} has the normalization in its graph and takes raw depth "
                             f"{self.camera_size}; call run_depth()")
        self._check_batch(x.shape[0])
        cls, dense = self._call(self.session, NET_INPUT, x, self._net_outputs(x.shape[0]))
        return cls, dense

    def normalize(self, depth: torch.Tensor) -> torch.Tensor:
        """Raw depth (H, W) or (B, H, W) -> the normalized network input, by the normalization graph."""
        if self.camera_size is not None:
            raise ValueError(f"{self.path.name} has the normalization fused into its graph; use run_depth()")
        depth = _batched(depth)
        (x,) = self._call(self._pre_session(tuple(depth.shape[-2:])), DEPTH_INPUT, depth,
                          {NET_INPUT: (depth.shape[0], 3, *self.info.padded_size)})
        return x

    def run_depth(self, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw depth in metres, (H, W) or (B, H, W): normalization and network in ONNX Runtime."""
        depth = _batched(depth)
        b, cam = depth.shape[0], tuple(depth.shape[-2:])
        self._check_batch(b)
        if self.camera_size is None:
            return self.run(self.normalize(depth))
        if cam != self.camera_size:
            raise ValueError(f"{self.path.name} was exported for {self.camera_size[0]}x{self.camera_size[1]} "
                             f"depth, got {cam[0]}x{cam[1]}; export it for this camera size")
        cls, dense = self._call(self.session, DEPTH_INPUT, depth, self._net_outputs(b))
        return cls, dense

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": str(self.device),
            "providers": list(self.providers),
            "onnx_file": str(self.path),
            "normalization_in_graph": self.camera_size is not None,
            "camera_size": list(self.camera_size) if self.camera_size else None,
            "intra_op_threads": self.threads,
            "spinning": self.spin,
            "tensorrt_cache": str(self.trt_cache_dir) if TRT_EP in self.providers else None,
            "onnxruntime": self._ort.__version__,
        }
