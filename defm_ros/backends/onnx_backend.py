"""ONNX Runtime inference on the CPU, CUDA or TensorRT execution provider.

Preprocessing runs as an ONNX graph too, so a frame costs ONNX Runtime calls only, with no torch
kernels (and no torch threads fighting ORT's for the cores). A file exported with its preprocessing
(`defm-ros export --camera-size`) is one call for its camera size; a network-only file gets a small
preprocessing session per camera size on first use.

A provider that was asked for and cannot be had is never dropped silently: the downgrade is logged
and listed in the report's warnings (or refused, strict=True), and the report names the providers
really in use.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import Backend, BackendReport, Preprocess, downgrade
from .graph import NET_INPUT, OUTPUT_NAMES, preprocess_graph
from .onnx_file import cache_dir, read_sidecar

log = logging.getLogger("defm_ros")

CPU_EP, CUDA_EP, TRT_EP = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
TRT_MAX_BATCH = 8  # the largest batch a TensorRT engine of a dynamic-batch file is built for


def trt_profile(model: Any, max_batch: int) -> dict[str, str]:
    """TensorRT EP provider options with one optimization profile for a dynamic-batch graph: batch 1 to
    `max_batch`, tuned for `max_batch`. Without a profile TensorRT builds its engine for the first batch
    size it sees and rebuilds it whenever a larger one arrives (minutes on a Jetson), stalling the node.

    `model`: an onnx.ModelProto. {} when every input is fixed, or when a dimension other than the
    batch is symbolic (no profile can be stated; TensorRT then profiles on its own, and says so).
    """
    initializers = {t.name for t in model.graph.initializer}
    dims: dict[str, list[int | None]] = {}
    for inp in model.graph.input:
        if inp.name not in initializers:
            dims[inp.name] = [d.dim_value if d.HasField("dim_value") else None
                              for d in inp.type.tensor_type.shape.dim]
    if not any(None in shape for shape in dims.values()):
        return {}
    if any(None in shape[1:] for shape in dims.values()):
        log.warning("TensorRT: only the batch dimension can be dynamic for a stated profile; got %s", dims)
        return {}

    def shapes(batch: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(batch if d is None else d) for d in shape)}"
                        for name, shape in dims.items())

    return {"trt_profile_min_shapes": shapes(1), "trt_profile_opt_shapes": shapes(max_batch),
            "trt_profile_max_shapes": shapes(max_batch)}


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
        `trt_max_batch`: with TensorRT, the largest batch of a dynamic-batch file (trt_profile)."""
        import onnxruntime as ort

        self._ort = ort
        self.path = Path(path)
        side = read_sidecar(self.path)
        self.meta = side["onnx"]
        self.precision = self.meta["precision"]
        self._padded = tuple(side["padded_size"])
        self._grid = (self._padded[0] // side["stride"], self._padded[1] // side["stride"])
        self._channels = (side["cls_channels"], side["dense_channels"])
        self.device = torch.device(device)
        self.threads, self.spin, self.trt, self.strict = threads, spin, trt, strict
        self.trt_cache_dir = Path(trt_cache_dir) if trt_cache_dir else cache_dir() / "trt"
        if trt_max_batch < 1:
            raise ValueError(f"trt_max_batch must be >= 1, got {trt_max_batch}")
        self.trt_max_batch = trt_max_batch
        self.warnings: list[str] = []
        self._providers = self._pick_providers()
        self.session = self._session(str(self.path))
        self.providers = self.session.get_providers()
        self._check_providers()
        fused = self.meta["normalization_in_graph"]
        self.fused_prep = prep if fused else None
        self.camera_size = tuple(self.meta["camera_size"]) if fused else None
        self._pre: dict[tuple[Preprocess, tuple[int, int]], Any] = {}
        self._lock = threading.Lock()

    def _downgrade(self, msg: str) -> None:
        downgrade(msg, self.strict, self.warnings)

    def _pick_providers(self) -> list[tuple[str, dict[str, Any]]]:
        available = self._ort.get_available_providers()
        chosen: list[tuple[str, dict[str, Any]]] = []
        if self.device.type == "cuda":
            idx = self.device.index or 0
            if self.trt and TRT_EP in available:
                self.trt_cache_dir.mkdir(parents=True, exist_ok=True)
                chosen.append((TRT_EP, {
                    "device_id": idx,
                    "trt_fp16_enable": self.precision == "fp16",
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(self.trt_cache_dir),
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": str(self.trt_cache_dir),
                }))
            elif self.trt:
                self._downgrade(f"TensorRT requested but onnxruntime {self._ort.__version__} has no {TRT_EP} "
                                "(needs onnxruntime-gpu and the TensorRT libraries); using CUDA without TensorRT")
            if CUDA_EP in available:
                chosen.append((CUDA_EP, {"device_id": idx}))
            else:
                self._downgrade(f"device {self.device} requested but onnxruntime has no {CUDA_EP}; running on cpu "
                                "(pip install onnxruntime-gpu)")
                self.device = torch.device("cpu")
        elif self.trt:
            self._downgrade("TensorRT needs device cuda; running on cpu without it")
        chosen.append((CPU_EP, {}))
        return chosen

    def _check_providers(self) -> None:
        """ORT falls back to the CPU when a GPU provider fails to load (missing CUDA/cuDNN libraries)."""
        missing = [name for name, _ in self._providers if name not in self.providers]
        if missing:
            self._downgrade(f"onnxruntime could not start {', '.join(missing)} (see its log above); "
                            f"running on {', '.join(self.providers)}")
        if CUDA_EP not in self.providers and TRT_EP not in self.providers:
            self.device = torch.device("cpu")

    def _session(self, model: str | Any) -> Any:
        """A session for a file path or an onnx.ModelProto, on the chosen providers."""
        providers = self._providers
        if any(name == TRT_EP for name, _ in providers):
            import onnx

            proto = onnx.load(model, load_external_data=False) if isinstance(model, str) else model
            profile = trt_profile(proto, self.trt_max_batch)
            providers = [(n, {**o, **profile} if n == TRT_EP else o) for n, o in providers]
        if not isinstance(model, str):
            model = model.SerializeToString()
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
                graph = preprocess_graph(prep, camera_size)
                self._pre[(prep, camera_size)] = self._session(graph)
            return self._pre[(prep, camera_size)]

    def _call(self, sess: Any, name: str, x: torch.Tensor, outputs: dict[str, tuple[int, ...]]) -> list[torch.Tensor]:
        """One ORT run. On CUDA the tensors stay on the GPU (IO binding into torch-owned memory).

        Float inputs go in as float32; uint8 (colour) stays uint8, as the graph's input declares it."""
        dtype = torch.uint8 if x.dtype == torch.uint8 else torch.float32
        if self.device.type == "cpu":
            got = sess.run(list(outputs), {name: x.detach().cpu().to(dtype).contiguous().numpy()})
            return [torch.from_numpy(g) for g in got]
        x = x.detach().to(self.device, dtype).contiguous()
        idx = self.device.index or 0
        binding = sess.io_binding()
        binding.bind_input(name, "cuda", idx, np.uint8 if dtype == torch.uint8 else np.float32, tuple(x.shape),
                           x.data_ptr())
        outs = [torch.empty(shape, dtype=torch.float32, device=self.device) for shape in outputs.values()]
        for out_name, t in zip(outputs, outs, strict=True):
            binding.bind_output(out_name, "cuda", idx, np.float32, tuple(t.shape), t.data_ptr())
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
        (x,) = self._call(pre, prep.input_name, raw, {NET_INPUT: (raw.shape[0], 3, *self._padded)})
        return x

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network input (B, 3, H, W), as the Preprocess makes it."""
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
        return BackendReport(
            backend=self.name, device=str(self.device), precision=self.precision, providers=list(self.providers),
            warnings=list(self.warnings), extra={
                "onnx_file": str(self.path),
                "normalization_in_graph": self.camera_size is not None,
                "camera_size": list(self.camera_size) if self.camera_size else None,
                "intra_op_threads": self.threads,
                "spinning": self.spin,
                "tensorrt_cache": str(self.trt_cache_dir) if TRT_EP in self.providers else None,
                "tensorrt_max_batch": self.trt_max_batch if TRT_EP in self.providers else None,
                "onnxruntime": self._ort.__version__,
            })

    def close(self) -> None:
        self.session = None
        self._pre.clear()
