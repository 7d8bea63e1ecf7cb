"""Exported ONNX files: export (checked), the sidecar that says what a file means, and the cache.

Two kinds of file come out of export_onnx, both with outputs `cls` and `dense` (graph.py):
- network only: input `input`, the (B, 3, H, W) tensor the model's Preprocess produces;
- with preprocessing: the raw input (`depth` in metres (B, H_cam, W_cam), or `image`, uint8 RGB
  (B, H_cam, W_cam, 3)) at one fixed camera size, so that a frame goes through one ONNX Runtime call
  and no torch at all.

Every file passes `onnx.checker` and a self-check before it is written: ONNX Runtime runs it on real
frames and its outputs are compared with the torch network's (fp32: max abs error <= 1e-4). fp16 files
are also compared with torch running the network in half precision, which overflows where a GPU would
(ONNX Runtime's CPU provider computes fp16 Conv/MatMul in fp32 and hides it). A JSON sidecar
`<file>.json` (the stream description plus the ONNX specifics and the check's numbers) lets a node
publish ~/features/info from the ONNX file alone.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import DEFAULT_PRECISION
from ..info import StreamInfo
from .base import Preprocess
from .graph import OPSET, OUTPUT_NAMES, FloatIO, joined, network_graph, preprocess_graph

log = logging.getLogger("defm_ros")

FP32_TOLERANCE = 1e-4
# fp16 rounds activations to 11 significant bits; on the LayerNorm'd outputs (|x| up to ~5) random and
# real weights stay within 2 % of the output's largest magnitude.
FP16_RELATIVE_TOLERANCE = 2e-2
Frames = tuple[np.ndarray, list[str]]  # the self-check's raw input batch, and where each frame came from
# What a file must agree on with the stream it is asked to serve; anything else would mislabel features.
SIDECAR_KEYS = ("model", "input_size", "padded_size", "stride", "dense_level", "dense_channels", "cls_channels")


class ExportError(RuntimeError):
    """An export that failed, a file that is not what it claims, or outputs that disagree with torch."""


def tolerance(precision: str, reference_max_abs: float) -> float:
    """The largest accepted |onnx - torch| for a precision: fixed for fp32, relative for fp16."""
    if precision == "fp16":
        return FP16_RELATIVE_TOLERANCE * max(1.0, reference_max_abs)
    return FP32_TOLERANCE


def _half_reference(net: nn.Module) -> nn.Module:
    """A half copy of `net`, wrapped as the fp16 graph is (float32 in and out, half inside). Torch stores
    every op's output in fp16, on the CPU too, so an activation beyond 65504 becomes inf here as on a
    GPU; ONNX Runtime's CPU provider keeps fp16 Conv/MatMul chains in fp32 and would hide it."""
    half = net.exportable() if hasattr(net, "exportable") else copy.deepcopy(net)  # exportable() copies
    return FloatIO(half.half(), half=True).eval()


def _check_half(ref: list[np.ndarray], half: list[np.ndarray], report: dict[str, Any]) -> None:
    """Refuse fp16 where the half reference overflows (non-finite where fp32 is finite) or strays beyond
    tolerance("fp16"); its errors go into `report`."""
    overflow = [name for name, r, h in zip(OUTPUT_NAMES, ref, half, strict=True)
                if (~np.isfinite(h) & np.isfinite(r)).any()]
    if overflow:
        raise ExportError(f"fp16 overflows: torch in half precision gives non-finite {', '.join(overflow)} where "
                          f"fp32 is finite (an activation beyond fp16's 65504 becomes inf on a GPU; ONNX "
                          f"Runtime's CPU provider computes in fp32 and hides it); export fp32, or run bf16 "
                          f"in torch (backend torch, precision bf16)")
    for name, r, h in zip(OUTPUT_NAMES, ref, half, strict=True):
        err, tol = float(np.abs(r - h).max()), tolerance("fp16", float(np.abs(r).max()))
        report[f"max_abs_err_{name}_half_reference"] = err
        if not err <= tol:
            raise ExportError(f"torch in half precision differs from fp32 on output {name} by {err:.3g} "
                              f"(> {tol:.3g}): fp16 loses too much here; export fp32, or run bf16 in torch")


def check_model(model: Any, net: nn.Module, prep: Preprocess, frames: Frames, precision: str = DEFAULT_PRECISION,
                camera_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Run `model` (a ModelProto) in ONNX Runtime on `frames` (raw input, which the caller picks: real ones
    where it has them); compare with `net` (CPU, fp32).

    `camera_size`: the graph takes raw input of that size (preprocessing inside); else it takes the
    network input. Raises ExportError when an output is not finite or differs by more than
    tolerance(precision); for fp16 also when `net` in half precision overflows or strays that far.
    """
    import onnxruntime as ort

    raw, names = frames
    x = prep(torch.from_numpy(raw))
    with torch.no_grad():
        ref = [t.numpy() for t in net(x)]
        half = [t.numpy() for t in _half_reference(net)(x)] if precision == "fp16" else None
    report: dict[str, Any] = {"frames": names, "provider": "CPUExecutionProvider", "reference": "torch fp32 cpu"}
    if half is not None:
        report["reference_half"] = "torch fp16 cpu"
        _check_half(ref, half, report)
    so = ort.SessionOptions()
    so.log_severity_level = 3  # fp16 graphs make the CPU provider chatter about constant folding
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = raw if camera_size else x.numpy()
    got = sess.run(list(OUTPUT_NAMES), {sess.get_inputs()[0].name: feed})
    for name, r, g in zip(OUTPUT_NAMES, ref, got, strict=True):
        if r.shape != g.shape:
            raise ExportError(f"onnx output {name} has shape {g.shape}, torch {r.shape}")
        if not np.isfinite(g).all():
            raise ExportError(f"onnx output {name} has {int((~np.isfinite(g)).sum())} non-finite values "
                              f"({precision}, onnxruntime {ort_version()})")
        err, tol = float(np.abs(r - g).max()), tolerance(precision, float(np.abs(r).max()))
        report[f"max_abs_err_{name}"], report[f"tolerance_{name}"] = err, tol
        if not err <= tol:
            raise ExportError(f"onnx output {name} differs from torch by {err:.3g} (> {tol:.3g}, {precision}; "
                              f"outputs up to {float(np.abs(r).max()):.3g}, onnxruntime {ort_version()})")
    return report


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}.json")


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of an exported file; refuses files without one (their meaning is unknown)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise ExportError(f"{side} is missing: an ONNX file needs its sidecar to say what its outputs mean; "
                          f"re-export it with `defm-ros export`")
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{side} is not a readable sidecar ({exc}); re-export with `defm-ros export`") from exc


def check_sidecar(side: dict[str, Any], wanted: StreamInfo, path: Path) -> None:
    """Refuse a file made for another model, size, head or depth mode than the stream it should serve."""
    want = wanted.to_dict()
    keys = SIDECAR_KEYS + (("depth_mode",) if side["onnx"]["normalization_in_graph"] else ())
    wrong = [f"{k} {side.get(k)!r} (requested {want[k]!r})" for k in keys if side.get(k) != want[k]]
    if wrong:
        raise ValueError(f"{path} does not fit the requested stream: it was exported with " + ", ".join(wrong)
                          + "; re-export it with `defm-ros export` or request what it was made for")


def _write_atomic(path: Path, data: bytes) -> None:
    """Readers (other nodes sharing a cache) never see a half-written file; the mode follows the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600: a node running as another user could not read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_onnx(
    net: nn.Module,
    info: StreamInfo,
    prep: Preprocess,
    path: str | os.PathLike,
    *,
    camera_size: tuple[int, int] | None = None,
    batch: int | None = None,
    precision: str = DEFAULT_PRECISION,
    frames: Frames | None = None,
) -> dict[str, Any]:
    """Write `net` (weights loaded, described by `info`, fed by `prep`) to `path` plus its sidecar.

    `camera_size` (H, W): put the preprocessing in the graph for raw input of that size.
    `batch`: a fixed batch size, or None for a dynamic batch dimension. `frames`: raw input of the
    camera size to check the file on (check_model), or None for no check. Returns the sidecar.
    """
    import onnx
    import onnxruntime as ort

    if batch is not None and batch < 1:
        raise ValueError(f"batch must be >= 1 or None (dynamic), got {batch}")
    net = copy.deepcopy(net).to("cpu", torch.float32).eval()  # the caller's may be on a GPU, in use
    model = network_graph(net, info, batch, precision, prep.net_channels)
    if camera_size is not None:
        model = joined(preprocess_graph(prep, tuple(camera_size), batch), model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph is not valid ONNX: {exc}") from exc
    report = check_model(model, net, prep, frames, precision, camera_size) if frames is not None else None
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
        "input": prep.input_description if camera_size else "the normalized network input (B, 3, H, W)",
        "normalization_in_graph": camera_size is not None,
        "camera_size": list(camera_size) if camera_size else None,
        "batch": batch,
        "outputs": list(OUTPUT_NAMES),
        "precision": precision,
        "input_dtype": onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type).name,
        "output_dtype": "float32",
        "dense_note": "dense is padded_size / stride; crop to dense_size",
        "check": report,
        "checker": "onnx.checker.check_model(full_check=True) passed",
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
    }
    _write_atomic(sidecar_path(path), (json.dumps(side, indent=1, sort_keys=True) + "\n").encode())
    log.info("exported %s (%s, %s%s)", path, info.model, precision,
             f", preprocessing for {camera_size[0]}x{camera_size[1]} input" if camera_size else "")
    return side


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


def cached_export(net: nn.Module, info: StreamInfo, prep: Preprocess, frames: Frames) -> Path:
    """Export the loaded network once per model/weights/size/precision (dynamic batch) and reuse it,
    checked on `frames`.

    Files live in cache_dir()/onnx; the sidecar is written last, so a file without one is redone.
    """
    h, w = info.input_size
    key = f"{info.model}-{info.dense_level}-{h}x{w}-{info.precision}-{_weights_key(net, info)}"
    path = cache_dir() / "onnx" / f"{key}.onnx"
    if path.is_file() and sidecar_path(path).is_file():
        log.info("using cached ONNX export %s", path)
        return path
    log.info("exporting %s to %s (once; later starts reuse it)", info.model, path)
    export_onnx(net, info, prep, path, batch=None, precision=info.precision, frames=frames)
    return path

