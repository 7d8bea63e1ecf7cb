"""ONNX Runtime inference on the CPU, CUDA or TensorRT execution provider.

Preprocessing runs as an ONNX graph too, so a frame costs ONNX Runtime calls only, with no torch
kernels (and no torch threads fighting ORT's for the cores). A file exported with its preprocessing
(`defm-ros export --camera-size`) is one call for its camera size; a network-only file gets a small
preprocessing session per camera size on first use.

Every run binds torch-owned buffers (IO binding) on every device, so the shapes and dtypes a GPU run
declares are the ones the CPU suite checks; only CUDA synchronises. TensorRT gets the network alone:
preprocessing graphs hold float64 (which TensorRT lacks) and values beyond fp16's range, so they run on
the CUDA provider. TensorRT engines are cached in one folder per file content, profile, precision,
TensorRT version and GPU, built under a file lock.

A provider that was asked for and cannot be had is never dropped silently: the downgrade is logged
and listed in the report's warnings (or refused, strict=True), and the report names the providers
really in use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.weights import file_sha256
from .base import Backend, BackendReport, Preprocess, downgrade
from .graph import NET_INPUT, OUTPUT_NAMES, preprocess_graph
from .onnx_file import cache_dir, read_sidecar

log = logging.getLogger("defm_ros")

CPU_EP, CUDA_EP, TRT_EP = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
TRT_MAX_BATCH = 8  # the largest batch a TensorRT engine of a dynamic-batch file is built for
Providers = list[tuple[str, dict[str, Any]]]


def trt_profile(inputs: dict[str, list[int | None]], max_batch: int) -> dict[str, str]:
    """TensorRT EP provider options with one optimization profile for a dynamic-batch graph: batch 1 to
    `max_batch`, tuned for `max_batch`. Without a profile TensorRT builds its engine for the first batch
    size it sees and rebuilds it whenever a larger one arrives (minutes on a Jetson), stalling the node.

    `inputs`: name -> shape, None where symbolic (an exported file's sidecar states it). {} when every
    input is fixed, or when a dimension other than the batch is symbolic (no profile can be stated;
    TensorRT then profiles on its own, and says so).
    """
    if not any(None in shape for shape in inputs.values()):
        return {}
    if any(None in shape[1:] for shape in inputs.values()):
        log.warning("TensorRT: only the batch dimension can be dynamic for a stated profile; got %s", inputs)
        return {}

    def shapes(batch: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(batch if d is None else d) for d in shape)}"
                        for name, shape in inputs.items())

    return {"trt_profile_min_shapes": shapes(1), "trt_profile_opt_shapes": shapes(max_batch),
            "trt_profile_max_shapes": shapes(max_batch)}


def tensorrt_version() -> str:
    """The TensorRT library's version: its Python module's, else libnvinfer's own; "unknown" if neither."""
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except ImportError:
        pass
    import ctypes

    for name in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            return f"libnvinfer {ctypes.CDLL(name).getInferLibVersion()}"
        except (OSError, AttributeError):
            continue
    return "unknown"


def gpu_name(index: int) -> str:
    """The GPU's name and compute capability (what an engine is built for), as torch sees it."""
    if not torch.cuda.is_available():
        return "unknown (torch has no CUDA)"
    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)} sm_{major}{minor}"


def engine_folder(root: Path, path: Path, precision: str, max_batch: int, ort_version: str,
                  device_index: int) -> tuple[Path, dict[str, Any]]:
    """The folder of `path`'s TensorRT engine below `root`, and the key it is named by (OnnxBackend)."""
    key = {"onnx_sha256": file_sha256(path), "precision": precision, "trt_max_batch": max_batch,
           "tensorrt": tensorrt_version(), "onnxruntime": ort_version, "gpu": gpu_name(device_index)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return root / f"{path.stem}-{digest}", key


class OnnxBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        prep: Preprocess,
        device: str | torch.device = "cpu",
        trt: bool = False,
        trt_cache_dir: str | os.PathLike | None = None,
        trt_max_batch: int = TRT_MAX_BATCH,
        threads: int = 0,
        spin: bool = True,
        strict: bool = False,
    ) -> None:
        """`path`: an exported file whose sidecar the caller has checked against its stream; `prep`: the
        Preprocess its graph implements when the file has it fused in. `threads`: ORT intra-op threads
        (0: one per physical core). `spin`: worker threads busy-wait between the ops of a run and sleep as
        soon as it returns (ORT's own default spins between runs too). On a 2-core VM, waking a sleeping
        thread for each op made ResNet-18's encode erratic (33-48 ms against 27-32 ms spinning); inside
        defm_node at 30 Hz, sharing the cores with a camera, both settings gave the same rate within noise
        (bench/RESULTS.md). `strict`: refuse, instead of downgrading, a device or provider not available.
        `trt_max_batch`: with TensorRT, the largest batch of a dynamic-batch file (trt_profile);
        `trt_cache_dir`: where engine folders go (default: the cache's trt/)."""
        import onnxruntime as ort

        self._ort = ort
        self.path = Path(path)
        side = read_sidecar(self.path)
        self.meta = side["onnx"]
        self.precision = self.meta["precision"]
        self._padded = tuple(side["padded_size"])
        self._grid = (self._padded[0] // side["stride"], self._padded[1] // side["stride"])
        self._channels = (side["cls_channels"], side["dense_channels"])
        fused = self.meta["normalization_in_graph"]
        self.fused_prep = prep if fused else None
        self.camera_size = tuple(self.meta["camera_size"]) if fused else None
        # ort_device: where ONNX Runtime computes; device: where the buffers it reads and writes live.
        self.ort_device = self.device = torch.device(device)
        self.threads, self.spin, self.strict = threads, spin, strict
        if trt_max_batch < 1:
            raise ValueError(f"trt_max_batch must be >= 1, got {trt_max_batch}")
        self.trt_max_batch = trt_max_batch
        self.trt_cache: Path | None = None  # this file's engine folder, once TensorRT is chosen
        self.warnings: list[str] = []
        gpu = self._gpu_providers(trt)
        self._pre_providers = [p for p in gpu if p[0] != TRT_EP] + [(CPU_EP, {})]
        net = gpu + [(CPU_EP, {})]
        if any(name == TRT_EP for name, _ in net):
            self.session = self._engine_session(net, Path(trt_cache_dir) if trt_cache_dir else cache_dir() / "trt")
        else:
            self.session = self._session(str(self.path), net)
        self.providers = self.session.get_providers()
        self._check_providers(net)
        self._pre: dict[tuple[Preprocess, tuple[int, int]], Any] = {}
        self._lock = threading.Lock()

    def _downgrade(self, msg: str) -> None:
        downgrade(msg, self.strict, self.warnings)

    def _gpu_providers(self, trt: bool) -> Providers:
        """The GPU providers for this device ([] on the CPU), each downgrade said out loud."""
        if self.ort_device.type != "cuda":
            if trt:
                self._downgrade("TensorRT needs device cuda; running on cpu without it")
            return []
        available, idx = self._ort.get_available_providers(), self.ort_device.index or 0
        chosen: Providers = []
        if trt and self.camera_size is not None:
            self._downgrade(f"TensorRT runs network-only files, and {self.path.name} has its preprocessing fused in "
                            "(float64 and values beyond fp16's range, which TensorRT cannot run); running it on CUDA "
                            "without TensorRT (export without --camera-size for TensorRT)")
        elif trt and TRT_EP not in available:
            self._downgrade(f"TensorRT requested but onnxruntime {self._ort.__version__} has no {TRT_EP} "
                            "(needs onnxruntime-gpu and the TensorRT libraries); using CUDA without TensorRT")
        elif trt:
            chosen.append((TRT_EP, {"device_id": idx, "trt_fp16_enable": self.precision == "fp16"}))
        if CUDA_EP not in available:
            self._downgrade(f"device {self.ort_device} requested but onnxruntime has no {CUDA_EP}; running on cpu "
                            "(pip install onnxruntime-gpu)")
            self.ort_device = self.device = torch.device("cpu")
            return []
        if not torch.cuda.is_available():
            self._downgrade(f"torch has no CUDA (a CPU-only build; on a Jetson install NVIDIA's JetPack torch), so "
                            f"frames cannot stay on the GPU; onnxruntime runs on {self.ort_device} and every frame "
                            "goes through host memory")
            self.device = torch.device("cpu")
        return [*chosen, (CUDA_EP, {"device_id": idx})]

    def _engine_session(self, providers: Providers, root: Path) -> Any:
        """The file's session with TensorRT, its engine in a folder of its own, built under a file lock.

        ORT names an engine by the file's name, tensor names and versions only, so a re-export of other
        weights under the same name, or another profile or precision, would load a stale engine without
        an error. The folder is keyed by everything the engine depends on instead: the file's content
        (weights, graph, shapes), the profile, the precision, TensorRT's version and the GPU. The lock
        keeps processes sharing a cache (Ray actors, two nodes) from building into one file at once."""
        from filelock import FileLock

        self.trt_cache, key = engine_folder(root, self.path, self.precision, self.trt_max_batch,
                                            self._ort.__version__, self.ort_device.index or 0)
        self.trt_cache.mkdir(parents=True, exist_ok=True)
        shape = [d if isinstance(d, int) else None for d in self.meta["input_shape"]]
        options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(self.trt_cache),
                   "trt_timing_cache_enable": True, "trt_timing_cache_path": str(self.trt_cache),
                   **trt_profile({self.meta["input_name"]: shape}, self.trt_max_batch)}
        with FileLock(self.trt_cache / ".lock"):
            (self.trt_cache / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True) + "\n")
            return self._session(str(self.path), [(n, {**o, **options} if n == TRT_EP else o) for n, o in providers])

    def _check_providers(self, wanted: Providers) -> None:
        """ORT falls back to the CPU when a GPU provider fails to load (missing CUDA/cuDNN libraries)."""
        missing = [name for name, _ in wanted if name not in self.providers]
        if missing:
            self._downgrade(f"onnxruntime could not start {', '.join(missing)} (see its log above); "
                            f"running on {', '.join(self.providers)}")
        if CUDA_EP not in self.providers and TRT_EP not in self.providers:
            self.ort_device = self.device = torch.device("cpu")

    def _session(self, model: str | bytes, providers: Providers) -> Any:
        """A session for a file path or a serialized graph, on `providers`."""
        so = self._ort.SessionOptions()
        so.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.threads
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            so.add_session_config_entry(key, "1" if self.spin else "0")
        if self.spin:  # spin between the ops of one run only, never between frames
            so.add_session_config_entry("session.force_spinning_stop", "1")
        return self._ort.InferenceSession(model, so, providers=[n for n, _ in providers],
                                          provider_options=[o for _, o in providers])

    def _pre_session(self, prep: Preprocess, camera_size: tuple[int, int]) -> Any:
        """The preprocessing graph for one camera size, built on first use (a fraction of a second)."""
        with self._lock:
            if (prep, camera_size) not in self._pre:
                log.info("building the preprocessing graph for %dx%d input", *camera_size)
                graph = preprocess_graph(prep, camera_size).SerializeToString()
                self._pre[(prep, camera_size)] = self._session(graph, self._pre_providers)
            return self._pre[(prep, camera_size)]

    def _call(self, sess: Any, name: str, x: torch.Tensor, outputs: dict[str, tuple[int, ...]]) -> list[torch.Tensor]:
        """One ORT run into torch-owned buffers on `self.device` (IO binding, on every device).

        Float inputs go in as float32; uint8 (colour) stays uint8, as the graph's input declares it."""
        dtype = torch.uint8 if x.dtype == torch.uint8 else torch.float32
        x = x.detach().to(self.device, dtype).contiguous()
        kind, idx = self.device.type, self.device.index or 0
        binding = sess.io_binding()
        binding.bind_input(name, kind, idx, np.uint8 if dtype == torch.uint8 else np.float32, tuple(x.shape),
                           x.data_ptr())
        outs = [torch.empty(shape, dtype=torch.float32, device=self.device) for shape in outputs.values()]
        for out_name, t in zip(outputs, outs, strict=True):
            binding.bind_output(out_name, kind, idx, np.float32, tuple(t.shape), t.data_ptr())
        if kind == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # torch's kernels wrote x on their own stream
        sess.run_with_iobinding(binding)
        return outs

    def _check_batch(self, b: int) -> None:
        fixed = self.meta["batch"]
        if fixed is not None and b != fixed:
            raise ValueError(f"{self.path.name} was exported for batch {fixed}, got {b}; export it without "
                             "--batch for any batch")
        if fixed is None and TRT_EP in self.providers and b > self.trt_max_batch:
            raise ValueError(f"batch {b} is larger than the TensorRT engine's profile ({self.trt_max_batch}); "
                             "pass trt_max_batch= at least the largest batch")

    def _net_outputs(self, b: int) -> dict[str, tuple[int, ...]]:
        return {OUTPUT_NAMES[0]: (b, self._channels[0]), OUTPUT_NAMES[1]: (b, self._channels[1], *self._grid)}

    def _not_fused(self, what: str) -> None:
        if self.camera_size is not None:
            raise ValueError(f"{self.path.name} has its preprocessing fused into the graph for "
                             f"{self.camera_size[0]}x{self.camera_size[1]} input; {what}")

    def preprocess(self, raw: torch.Tensor, prep: Preprocess) -> torch.Tensor:
        """Raw input -> the network input, by the preprocessing graph for its size."""
        self._not_fused("it cannot preprocess separately")
        pre = self._pre_session(prep, prep.raw_size(raw))
        (x,) = self._call(pre, prep.input_name, raw, {NET_INPUT: (raw.shape[0], prep.net_channels, *self._padded)})
        return x

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network input (B, C, H, W), as the Preprocess makes it."""
        self._not_fused("it takes raw input (Encoder.encode)")
        self._check_batch(x.shape[0])
        cls, dense = self._call(self.session, NET_INPUT, x, self._net_outputs(x.shape[0]))
        return cls, dense

    def infer(self, raw: torch.Tensor, prep: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_batch(raw.shape[0])
        if self.camera_size is None:
            return self.run(self.preprocess(raw, prep))
        if prep != self.fused_prep:
            raise ValueError(f"{self.path.name} has {self.fused_prep} fused into its graph, not {prep}; export a "
                             "network-only file (no --camera-size) to change the preprocessing per call")
        cam = prep.raw_size(raw)
        if cam != self.camera_size:
            raise ValueError(f"{self.path.name} was exported for {self.camera_size[0]}x{self.camera_size[1]} "
                             f"input, got {cam[0]}x{cam[1]}; export it for this camera size")
        cls, dense = self._call(self.session, prep.input_name, raw, self._net_outputs(raw.shape[0]))
        return cls, dense

    def report(self) -> BackendReport:
        trt = TRT_EP in self.providers
        return BackendReport(
            backend=self.name, device=str(self.ort_device), precision=self.precision, providers=list(self.providers),
            warnings=list(self.warnings), extra={
                "onnx_file": str(self.path),
                "normalization_in_graph": self.camera_size is not None,
                "camera_size": list(self.camera_size) if self.camera_size else None,
                "io_device": str(self.device),
                "intra_op_threads": self.threads,
                "spinning": self.spin,
                "tensorrt_cache": str(self.trt_cache) if trt else None,
                "tensorrt_max_batch": self.trt_max_batch if trt else None,
                "onnxruntime": self._ort.__version__,
            })

    def close(self) -> None:
        """Drop the sessions (ORT frees its arenas with them) and torch's cached IO-binding buffers."""
        self.session = None
        self._pre.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
