"""Export a zoo variant to ONNX, optionally with DeFM's normalization in the graph, and check it.

Two kinds of file come out, both with outputs `cls` (B, C) and `dense` (B, C', h, w), float32:
- network only: input `input`, the normalized (B, 3, H, W) tensor that normalize_depth produces;
- with normalization: input `depth`, raw depth in metres (B, H_cam, W_cam) at one fixed camera size,
  so that a frame goes through one ONNX Runtime call and no torch at all.
fp16 files keep float32 inputs and outputs (casts sit inside the graph), so callers never change.

Every file is checked before it is handed out: ONNX Runtime runs it on depth frames and its outputs
are compared with the torch model's (fp32: max abs error <= 1e-4). A JSON sidecar `<file>.json`
(StreamInfo plus the ONNX specifics and the check's numbers) lets a node publish ~/features/info
from the ONNX file alone. No rclpy here.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..info import StreamInfo
from ..normalize import (
    InputGeometry,
    log_planes,
    normalize_depth,
    planes_to_input,
    relative_to_pseudo_metric,
)

log = logging.getLogger("defm_ros")

OPSET = 18
OUTPUT_NAMES = ("cls", "dense")
NET_INPUT = "input"
DEPTH_INPUT = "depth"
EXPORT_PRECISIONS = ("fp32", "fp16")
FP32_TOLERANCE = 1e-4
# fp16 rounds activations to 11 significant bits; on the LayerNorm'd outputs (|x| up to ~5) random and
# real weights stay within 2 % of the output's largest magnitude.
FP16_RELATIVE_TOLERANCE = 2e-2
RESIZE_BLOCK = 32  # outputs per block of the banded resize products
CAMERA_SIZE = (480, 640)  # what the self-check's real frames are (RealSense/ZED VGA depth)


class ExportError(RuntimeError):
    """An export that failed or whose ONNX Runtime outputs disagree with torch."""


def tolerance(precision: str, reference_max_abs: float) -> float:
    """The largest accepted |onnx - torch| for a precision: fixed for fp32, relative for fp16."""
    if precision == "fp16":
        return FP16_RELATIVE_TOLERANCE * max(1.0, reference_max_abs)
    return FP32_TOLERANCE


def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of torch's antialiased bilinear resize along one axis.

    Resizing an identity gives the weights themselves, so `R_h @ x @ R_w.T` equals
    F.interpolate(x, antialias=True) to float rounding (5e-7). The identity is float32 on purpose:
    torch's float32 kernel rounds its weights, and float64 weights would be off from it (and so from
    upstream) by up to 1e-4 on noisy input. ONNX Resize (opset 18 antialias) uses another filter
    support and is off by up to 1e-2 on real depth, which is why it is not used.
    """
    eye = torch.eye(n_in)[None, None]
    out = F.interpolate(eye, size=(n_out, n_in), mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].float()


def resize_bands(n_in: int, n_out: int, block: int = RESIZE_BLOCK) -> list[tuple[int, int, torch.Tensor]]:
    """resize_matrix in blocks of `block` outputs, each cut to the input span its taps reach.

    The matrix is banded (a handful of taps per output), so the blocks' products leave out the dense
    product's multiplications by zero: 85 % of them from 640x480 to 224x224, with the same sums.
    """
    m = resize_matrix(n_in, n_out)
    bands = []
    for o0 in range(0, n_out, block):
        w = m[o0:o0 + block]
        taps = w.ne(0).any(0).nonzero().flatten()
        i0, i1 = int(taps[0]), int(taps[-1]) + 1
        bands.append((i0, i1, w[:, i0:i1].contiguous()))
    return bands


class GraphNormalize(nn.Module):
    """normalize_depth for one fixed camera size, in ops that export to few, fast ONNX nodes.

    Same arithmetic as normalize.normalize_depth, except: NaN/+-inf -> 0 is one Where (NaN < inf is
    false, -inf is clamped to 0 anyway), and the resize is banded constant matrix products (ONNX
    Runtime spent 5-6 ms per 640x480 frame on the dense ones, more than the rest of the graph).
    """

    def __init__(self, camera_size: tuple[int, int], geometry: InputGeometry, depth_mode: str = "metric") -> None:
        super().__init__()
        self.geometry, self.relative = geometry, depth_mode == "relative"
        self.resize = tuple(camera_size) != tuple(geometry.resize)
        if self.resize:  # constants of the traced graph
            self.rows = resize_bands(camera_size[0], geometry.resize[0])
            self.cols = [(i0, i1, w.T.contiguous()) for i0, i1, w in resize_bands(camera_size[1], geometry.resize[1])]

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        if self.relative:
            depth = relative_to_pseudo_metric(depth)
        planes, lo, hi = log_planes(torch.where(depth < math.inf, depth, torch.zeros_like(depth)))
        if self.resize:
            planes = torch.cat([planes[..., i0:i1] @ w for i0, i1, w in self.cols], dim=-1)
            planes = torch.cat([w @ planes[..., i0:i1, :] for i0, i1, w in self.rows], dim=-2)
        return planes_to_input(planes, lo, hi, self.geometry)


class _FloatIO(nn.Module):
    """float32 in and out whatever the network's precision, so callers never change with fp16."""

    def __init__(self, net: nn.Module, half: bool) -> None:
        super().__init__()
        self.net, self.half = net, half

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls, dense = self.net(x.half() if self.half else x)
        return cls.float(), dense.float()


def _to_onnx(module: nn.Module, example: torch.Tensor, input_name: str, output_names: list[str],
             dynamic_batch: bool) -> Any:
    """Trace `module` with the TorchScript exporter (no onnxscript dependency) into a ModelProto."""
    import onnx

    axes = {name: {0: "batch"} for name in (input_name, *output_names)} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer chatter
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=OPSET, input_names=[input_name],
                          output_names=output_names, dynamic_axes=axes, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def network_graph(net: nn.Module, info: StreamInfo, batch: int | None = None, precision: str = "fp32") -> Any:
    """The network alone: normalized `input` (B, 3, *padded) -> `cls`, `dense`; batch None is dynamic."""
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"ONNX export precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
    half = precision == "fp16"
    net = net.eval().to("cpu", torch.float16 if half else torch.float32)
    try:
        example = torch.zeros(batch or 2, 3, *info.padded_size)
        with _fixed_pos_embed(net, info):
            return _to_onnx(_FloatIO(net, half), example, NET_INPUT, list(OUTPUT_NAMES), batch is None)
    finally:
        net.float()


@contextlib.contextmanager
def _fixed_pos_embed(net: nn.Module, info: StreamInfo) -> Iterator[None]:
    """ViTs interpolate their position embedding to the patch grid; at a fixed input size that is a
    constant, so it goes into the graph as one (computed by torch, hence exact). Tracing the
    interpolation itself fails: its scale factors become tensors."""
    if not hasattr(net, "_pos_embed"):
        yield
        return
    h, w = info.padded_size[0] // info.stride, info.padded_size[1] // info.stride
    with torch.no_grad():
        pos = net._pos_embed(h, w, next(net.parameters()).dtype)
    net._pos_embed = lambda *_: pos  # instance attribute shadows the method while tracing
    try:
        yield
    finally:
        del net._pos_embed


def normalization_graph(info: StreamInfo, camera_size: tuple[int, int], batch: int | None = None) -> Any:
    """Raw `depth` (B, *camera_size) in metres -> the normalized `input` the network takes."""
    geom = InputGeometry(tuple(info.input_size), tuple(info.padded_size))
    example = torch.rand(batch or 2, *camera_size) * 5.0
    return _to_onnx(GraphNormalize(camera_size, geom, info.depth_mode), example, DEPTH_INPUT, [NET_INPUT],
                    batch is None)


def with_normalization(net_model: Any, info: StreamInfo, camera_size: tuple[int, int],
                       batch: int | None = None) -> Any:
    """One graph: raw depth -> normalization -> network."""
    import onnx.compose

    pre = onnx.compose.add_prefix(normalization_graph(info, camera_size, batch), "normalize/",
                                  rename_inputs=False)
    return onnx.compose.merge_models(pre, net_model, io_map=[(f"normalize/{NET_INPUT}", NET_INPUT)])


def check_frames(camera_size: tuple[int, int] = CAMERA_SIZE, count: int = 2) -> tuple[torch.Tensor, list[str]]:
    """`count` depth frames in metres (count, *camera_size) and where each came from.

    Real 640x480 frames (rgbd_examples, 16-bit mm) when the shared data exists, resized (nearest) to
    other camera sizes; else synthetic frames with NaN, +-inf and holes, so that invalid-pixel
    handling is exercised either way.
    """
    from ..sample_data import data_root, load_depth_png

    frames, names = [], []
    root = data_root()
    for f in sorted(root.glob("rgbd_examples/*/raw_depth.png"))[:count] if root else []:
        d = torch.from_numpy(load_depth_png(f).depth)
        if tuple(d.shape) != tuple(camera_size):
            d = F.interpolate(d[None, None], size=camera_size, mode="nearest")[0, 0]
        frames.append(d)
        names.append(str(f))
    while len(frames) < count:
        gen = torch.Generator().manual_seed(len(frames))
        d = torch.linspace(0.3, 12.0, camera_size[1]).expand(camera_size).clone()
        d += torch.rand(camera_size, generator=gen)
        d[:, :8] = 0.0
        d[0, 0], d[1, 1], d[2, 2], d[3, 3] = math.nan, math.inf, -math.inf, 200.0
        frames.append(d)
        names.append("synthetic")
    return torch.stack(frames), names


def check_model(model: Any, net: nn.Module, info: StreamInfo, precision: str = "fp32",
                camera_size: tuple[int, int] | None = None, batch: int | None = None) -> dict[str, Any]:
    """Run `model` (ModelProto or path) in ONNX Runtime on depth frames; compare with torch fp32.

    Raises ExportError when an output differs by more than tolerance(precision).
    """
    import onnxruntime as ort

    cam = tuple(camera_size) if camera_size else CAMERA_SIZE
    depth, names = check_frames(cam, batch or 2)
    geom = InputGeometry(tuple(info.input_size), tuple(info.padded_size))
    x = normalize_depth(depth, geom, info.depth_mode)
    with torch.no_grad():
        ref = [t.numpy() for t in net.eval().float().cpu()(x)]
    so = ort.SessionOptions()
    so.log_severity_level = 3  # fp16 graphs make the CPU provider chatter about constant folding
    src = str(model) if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    feed = depth.numpy() if camera_size else x.numpy()
    got = sess.run(list(OUTPUT_NAMES), {sess.get_inputs()[0].name: feed})
    report: dict[str, Any] = {"frames": names, "provider": "CPUExecutionProvider", "reference": "torch fp32 cpu"}
    for name, r, g in zip(OUTPUT_NAMES, ref, got, strict=True):
        if r.shape != g.shape:
            raise ExportError(f"onnx output {name} has shape {g.shape}, torch {r.shape}")
        err, tol = float(np.abs(r - g).max()), tolerance(precision, float(np.abs(r).max()))
        report[f"max_abs_err_{name}"], report[f"tolerance_{name}"] = err, tol
        if not err <= tol:
            raise ExportError(f"onnx output {name} differs from torch by {err:.3g} (> {tol:.3g}, {precision})")
    return report


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}.json")


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of an exported file; refuses files without one (their meaning is unknown)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise ExportError(f"{side} is missing: an ONNX file needs its sidecar to say what its outputs mean; "
                          f"re-export it with `defm-ros export`")
    return json.loads(side.read_text())


def _write_atomic(path: Path, data: bytes) -> None:
    """Readers (other nodes sharing a cache) never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_onnx(
    net: nn.Module,
    info: StreamInfo,
    path: str | os.PathLike,
    *,
    camera_size: tuple[int, int] | None = None,
    batch: int | None = 1,
    precision: str = "fp32",
    check: bool = True,
) -> dict[str, Any]:
    """Write `net` (weights loaded, described by `info`) to `path` plus its sidecar; returns the sidecar.

    `camera_size` (H, W): put the normalization in the graph for raw depth of that size.
    `batch`: a fixed batch size, or None for a dynamic batch dimension.
    """
    import onnx
    import onnxruntime as ort

    if batch is not None and batch < 1:
        raise ValueError(f"batch must be >= 1 or None (dynamic), got {batch}")
    model = network_graph(net, info, batch, precision)
    if camera_size is not None:
        model = with_normalization(model, info, tuple(camera_size), batch)
    report = check_model(model, net, info, precision, camera_size, batch) if check else None
    path = Path(path)
    _write_atomic(path, model.SerializeToString())
    inp = model.graph.input[0]
    shape = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    side = info.to_dict()
    side.update(backend="onnxruntime", precision=precision, providers=[], extra={})
    side["onnx"] = {
        "file": path.name,
        "opset": OPSET,
        "input_name": inp.name,
        "input_shape": shape,
        "input": "raw depth in metres" if camera_size else "normalized depth (B, 3, H, W)",
        "normalization_in_graph": camera_size is not None,
        "camera_size": list(camera_size) if camera_size else None,
        "batch": batch,
        "outputs": list(OUTPUT_NAMES),
        "precision": precision,
        "io_dtype": "float32",
        "dense_note": "dense is padded_size / stride; crop to dense_size",
        "check": report,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
    }
    _write_atomic(sidecar_path(path), (json.dumps(side, indent=1, sort_keys=True) + "\n").encode())
    log.info("exported %s (%s, %s%s)", path, info.model, precision,
             f", normalization for {camera_size[0]}x{camera_size[1]} depth" if camera_size else "")
    return side


def export_model(
    model: str,
    path: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    input_size: tuple[int, int] = (224, 224),
    dense_level: str = "P4",
    depth_mode: str = "metric",
    **kwargs: Any,
) -> dict[str, Any]:
    """Build a zoo variant and load its checkpoint exactly as Encoder does, then export_onnx it."""
    from ..encoder import Encoder

    enc = Encoder(model, weights=weights, backend="torch", device="cpu", input_size=input_size,
                  dense_level=dense_level, depth_mode=depth_mode)
    return export_onnx(enc.backend.model, enc.info_obj, path, **kwargs)
