"""The figures a lent GPU machine gives in one run (issues 26, 27): one step per call, driven by gpu_check.sh.

    python bench/gpu_check.py STEP --work DIR [--device cuda|cpu]      STEP: one of STEPS, or `summary`

Each step writes DIR/steps/<step>.json ({"ok", "seconds", "rows", "notes", "error"}); `summary --out OUT` merges
them into OUT/gpu_check.json and OUT/summary.md. Weights are random (the machine reaches no Hub), written
and loaded as checkpoints where a family needs one (LingBot). `--device cpu` runs every step on the CPU at
reduced sizes: the rehearsal of the script's own plumbing, with no device time spent. Needs the package
(PYTHONPATH), torch, numpy, onnx and onnxruntime; no ROS, and nothing is installed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFM = ["defm_resnet18", "defm_resnet34", "defm_resnet50", "defm_efficientnet_b0", "defm_efficientnet_b2",
        "defm_efficientnet_b4", "defm_efficientnet_b6", "defm_regnet_y_400mf", "defm_regnet_y_800mf",
        "defm_regnet_y_1_6gf", "defm_vit_s14", "defm_vit_l14"]
THEIA = ["theia_tiny", "theia_small", "theia_base"]
SPEED_MODELS = ["defm_resnet18", "defm_efficientnet_b0", "defm_vit_s14", "theia_small"]
# The DeFM README's figures (ms per batch): RTX 4090 at batch 128, Jetson Orin per frame.
ANCHORS = {"defm_resnet18": {"rtx4090_b128": 21.06, "orin_b1": 8.67},
           "defm_vit_s14": {"rtx4090_b128": 63.76, "orin_b1": 11.92}}
FP32_TOL = 1e-4  # absolute, fp32 on the GPU against fp32 on the CPU
# Relative to the reference's largest magnitude. bf16 keeps 8 bits of mantissa: on the CPU with random weights
# EfficientNet-B4/B6 measured up to 0.098 (deep depthwise stacks), ResNets 0.034, ViTs 0.006 (bench/RESULTS.md).
HALF_TOL = {"fp16": 2e-2, "bf16": 0.12}
CAMERA = (480, 640)


class Plan:
    """Sizes per device: the GPU's real ones; the CPU's small enough for a 2-core rehearsal."""

    def __init__(self, device: str) -> None:
        self.device, gpu = device, device == "cuda"
        self.sizes = [(224, 224), (240, 320)] if gpu else [(112, 112), (112, 154)]
        self.batches = [1, 32] if gpu else [1, 4]
        self.anchor_batch = 128 if gpu else 8
        self.iters, self.warmup = (30, 10) if gpu else (3, 1)
        self.tokens = 1200 if gpu else 150  # LingBot's patch count (upstream's default at resolution 0)
        self.rgbd_size = (420, 560) if gpu else (140, 196)


# --- helpers ---------------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, iters: int, warmup: int) -> dict[str, float]:
    """Median and p95 of `fn` in ms, after warm-up, synchronised per call (each call is a frame's latency)."""
    for _ in range(warmup):
        fn()
    sync(device)
    ms = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95))}


def frames(modality: str, batch: int, camera: tuple[int, int] = CAMERA) -> np.ndarray:
    """Real frames where the shared data is here ($DEFM_ROS_DATA), else synthetic ones with holes."""
    from defm_ros.sample_data import sample_inputs

    x, _ = sample_inputs(modality, camera, min(batch, 4))
    reps = -(-batch // len(x))
    return np.concatenate([x] * reps)[:batch]


def encoder(model: str, device: str, seed: int = 0, **kw: Any) -> Any:
    from defm_ros import Encoder

    torch.manual_seed(seed)
    return Encoder(model, weights=kw.pop("weights", "random"), device=device, **kw)


def errors(got: Any, ref: Any) -> dict[str, float]:
    """max |got - ref| of cls and dense, and the same relative to the reference's largest magnitude."""
    out = {}
    for name in ("cls", "dense"):
        g, r = getattr(got, name).float().cpu(), getattr(ref, name).float().cpu()
        err = float((g - r).abs().max())
        out[f"{name}_max_abs"], out[f"{name}_rel"] = err, err / max(float(r.abs().max()), 1e-12)
        out[f"{name}_finite"] = bool(torch.isfinite(g).all())
    return out


def verdict(err: dict[str, float], precision: str) -> bool:
    if not (err["cls_finite"] and err["dense_finite"]):
        return False
    if precision == "fp32":
        return max(err["cls_max_abs"], err["dense_max_abs"]) <= FP32_TOL
    return max(err["cls_rel"], err["dense_rel"]) <= HALF_TOL[precision]


def lingbot_checkpoint(work: Path, device: str) -> str | Path:
    """A LingBot-Depth model.pt in the official layout: the assumed ViT-L config on the GPU, a ViT-S one on
    the CPU (random weights either way: the Hub is out of reach)."""
    from defm_ros.models.lingbot import ASSUMED_VITL_CONFIG, build_lingbot

    path = work / f"lingbot-{device}.pt"
    if not path.exists():
        config = json.loads(json.dumps(ASSUMED_VITL_CONFIG))
        if device != "cuda":
            config["encoder"].update(backbone="dinov2_vits14", dim_out=384)
            config["neck"]["dim_in"][0] = 386
        torch.manual_seed(0)
        torch.save({"model_config": config, "model": build_lingbot(config).state_dict()}, path)
    return path


def free(*objs: Any) -> None:
    for o in objs:
        close = getattr(o, "close", None)
        if close is not None:
            close()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- steps -----------------------------------------------------------------------------------------------------


def step_env(plan: Plan, work: Path) -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

    row: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "onnx": onnx.__version__, "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(),
        "device": plan.device, "cpu_count": os.cpu_count(), "data": os.environ.get("DEFM_ROS_DATA", "synthetic"),
    }
    for name in ("torchvision", "transformers"):
        try:
            row[name] = __import__(name).__version__
        except ImportError:
            row[name] = None
    if plan.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        row.update(gpu=torch.cuda.get_device_name(0), capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(),
                   bf16_native=torch.cuda.is_bf16_supported(including_emulation=False))
        try:
            row["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            row["driver"] = f"nvidia-smi failed: {exc}"
    notes = []
    if "CUDAExecutionProvider" not in row["ort_providers"]:
        notes.append("onnxruntime has no CUDA or TensorRT provider here: those paths stay unverified on a GPU "
                     "(the ONNX step runs the same code on the CPU provider)")
    return {"rows": [row], "notes": notes}


def step_parity(plan: Plan, work: Path) -> dict[str, Any]:
    """Every DeFM variant, Theia and the LingBot RGB-D encoder on the device against fp32 on the CPU, at a
    square and a non-square size; the Refiner too. fp32 within FP32_TOL, fp16/bf16 within HALF_TOL."""
    rows = []
    precisions = ["fp32", "fp16", "bf16"]
    lingbot = lingbot_checkpoint(work, plan.device)
    cases = [(m, s) for m in DEFM for s in plan.sizes] + [(m, plan.sizes[0]) for m in THEIA]
    cases.append(("lingbot_rgbd_vitl14", plan.rgbd_size))
    for model, size in cases:
        weights = lingbot if model.startswith("lingbot") else "random"
        ref_enc = encoder(model, "cpu", input_size=size, weights=weights)
        x = frames(ref_enc.spec.modality, 2)
        ref = ref_enc.encode(x)
        ref_enc.close()
        for precision in precisions:
            enc = encoder(model, plan.device, input_size=size, weights=weights, precision=precision)
            got = enc.encode(torch.from_numpy(x).to(enc.device))
            err = errors(got, ref)
            rows.append({"model": model, "size": "x".join(map(str, size)), "precision": precision,
                         "ran_as": enc.info["precision"], "fused_attention": enc.info["extra"].get("fused_attention"),
                         **err, "pass": verdict(err, enc.info["precision"])})
            free(enc)
        print(f"parity {model} {size}: " + ", ".join(f"{r['precision']} {'ok' if r['pass'] else 'FAIL'}"
                                                      for r in rows[-3:]), flush=True)
    rows += refiner_parity(plan, work, lingbot)
    bad = [f"{r['model']} {r.get('size', '')} {r['precision']}" for r in rows if not r["pass"]]
    return {"rows": rows, "notes": [f"beyond tolerance: {', '.join(bad)}"] if bad else [],
            "failed": bool(bad)}


def refiner_parity(plan: Plan, work: Path, weights: Path) -> list[dict[str, Any]]:
    from defm_ros import Refiner

    rgb, depth = frames("color", 1)[0], frames("depth", 1)[0]
    ref = Refiner(weights=weights, num_tokens=plan.tokens).refine(rgb, depth)
    rows = []
    for precision in ("fp32", "bf16", "fp16"):
        r = Refiner(weights=weights, device=plan.device, precision=precision, num_tokens=plan.tokens)
        got = r.refine(rgb, depth)
        both = got.mask.cpu() & ref.mask
        rel = ((got.depth.cpu()[both] - ref.depth[both]).abs() / ref.depth[both]).max() if both.any() else 0.0
        mask_agree = float((got.mask.cpu() == ref.mask).float().mean())
        tol = FP32_TOL if r.precision == "fp32" else HALF_TOL[r.precision]
        rows.append({"model": "lingbot_depth_vitl14 (Refiner)", "precision": precision, "ran_as": r.precision,
                     "depth_rel_max": float(rel), "mask_agreement": mask_agree,
                     "pass": float(rel) <= max(tol, 1e-3) and (mask_agree >= 0.999 or r.precision != "fp32")})
        free(r)
    return rows


def step_speed(plan: Plan, work: Path) -> dict[str, Any]:
    """Per-frame latency and batched throughput of Encoder.encode from device-resident 640x480 frames, per
    precision and memory format, as ms and as a ratio to fp32 eager; the anchors' batch for the README figures."""
    rows = []
    variants = [("fp32", {}), ("fp16", {}), ("bf16", {}), ("fp16", {"channels_last": True})]
    for model in SPEED_MODELS:
        batches = plan.batches + ([plan.anchor_batch] if model in ANCHORS else [])
        for batch in batches:
            base = None
            raw = None
            for precision, opts in variants:
                enc = encoder(model, plan.device, precision=precision, input_size=plan.sizes[0], **opts)
                if raw is None:
                    raw = torch.from_numpy(frames(enc.spec.modality, batch)).to(enc.device)
                t = timed(lambda e=enc, r=raw: e.encode(r), plan.device, plan.iters, plan.warmup)
                base = base or t["median_ms"]
                label = precision + ("+channels_last" if opts else "")
                row = {"model": model, "batch": batch, "variant": label, "ran_as": enc.info["precision"], **t,
                       "frames_per_s": batch * 1e3 / t["median_ms"], "ratio_to_fp32_eager": t["median_ms"] / base}
                if batch == plan.anchor_batch and model in ANCHORS:
                    row["anchor_rtx4090_b128_ms"] = ANCHORS[model]["rtx4090_b128"]
                    x = enc.preprocess(raw)
                    row["network_only_ms"] = timed(lambda e=enc, x=x: e.backend.run(x), plan.device, plan.iters,
                                                   plan.warmup)["median_ms"]
                if batch == 1 and model in ANCHORS:
                    row["anchor_orin_ms"] = ANCHORS[model]["orin_b1"]
                rows.append(row)
                free(enc)
            print(f"speed {model} b{batch}: " + ", ".join(f"{r['variant']} {r['median_ms']:.2f} ms"
                                                          for r in rows[-len(variants):]), flush=True)
            del raw
    h, w = plan.sizes[0]
    return {"rows": rows, "notes": ["encode = preprocessing + network from frames already on the device, "
                                    f"synchronised per call; input size {h}x{w} from 480x640 frames"]}


def step_lingbot_speed(plan: Plan, work: Path) -> dict[str, Any]:
    """LingBot's RGB-D encoder and Refiner per frame, fp32 and bf16 (upstream's use_fp16)."""
    from defm_ros import Refiner

    weights = lingbot_checkpoint(work, plan.device)
    rows = []
    x = torch.from_numpy(frames("rgbd", 1))
    for precision in ("fp32", "bf16"):
        enc = encoder("lingbot_rgbd_vitl14", plan.device, input_size=plan.rgbd_size, weights=weights,
                      precision=precision)
        rows.append({"model": "lingbot_rgbd_vitl14", "precision": precision,
                     **timed(lambda e=enc, r=x.to(enc.device): e.encode(r), plan.device, 10 if plan.device == "cuda"
                             else 2, 2 if plan.device == "cuda" else 1)})
        free(enc)
        r = Refiner(weights=weights, device=plan.device, precision=precision, num_tokens=plan.tokens)
        rgb, depth = frames("color", 1)[0], frames("depth", 1)[0]
        rows.append({"model": "lingbot_depth_vitl14 (Refiner)", "precision": precision,
                     **timed(lambda rr=r, c=rgb, d=depth: rr.refine(c, d), plan.device,
                             10 if plan.device == "cuda" else 2, 1)})
        free(r)
    return {"rows": rows, "notes": [f"RGB-D encoder at {plan.rgbd_size[0]}x{plan.rgbd_size[1]}; Refiner on a 640x480 "
                                    f"frame at {plan.tokens} tokens, host arrays in and device tensors out"]}


def _cuda_memory() -> dict[str, float]:
    if not torch.cuda.is_available():
        return {}
    return {"allocated_mib": torch.cuda.memory_allocated() / 2**20,
            "reserved_mib": torch.cuda.memory_reserved() / 2**20}


def step_memory(plan: Plan, work: Path) -> dict[str, Any]:
    """Device memory before open, in use, after close (deactivate) and after a second open/close (activate):
    a lifecycle node must give back what it took."""
    from defm_ros import Refiner

    rows = []
    if plan.device == "cuda":  # cuBLAS's workspace stays for the process: take it before the first figure
        torch.ones(8, 8, device="cuda") @ torch.ones(8, 8, device="cuda")
    models = [("defm_resnet18", {}), ("defm_vit_l14", {}), ("theia_small", {}),
              ("lingbot_rgbd_vitl14", {"weights": lingbot_checkpoint(work, plan.device), "input_size": plan.rgbd_size})]
    for model, kw in models:
        enc = encoder(model, plan.device, lazy=True, **kw)
        x = torch.from_numpy(frames(enc.spec.modality, 2))
        row: dict[str, Any] = {"model": model, "before": _cuda_memory()}
        for cycle in ("first", "second"):
            enc.open()
            enc.encode(x.to(enc.device))
            sync(plan.device)
            row[f"{cycle}_open"] = _cuda_memory()
            enc.close()
            row[f"{cycle}_closed"] = _cuda_memory()
        rows.append(row)
    r = Refiner(weights=lingbot_checkpoint(work, plan.device), device=plan.device, num_tokens=plan.tokens, lazy=True)
    row = {"model": "lingbot_depth_vitl14 (Refiner)", "before": _cuda_memory()}
    for cycle in ("first", "second"):
        r.open()
        r.refine(frames("color", 1)[0], frames("depth", 1)[0])
        row[f"{cycle}_open"] = _cuda_memory()
        r.close()
        row[f"{cycle}_closed"] = _cuda_memory()
    rows.append(row)
    notes = [] if plan.device == "cuda" else ["no CUDA memory on the CPU: the open/close cycles ran, no figures"]
    leaks = [r["model"] for r in rows
             if r["second_closed"].get("allocated_mib", 0) > r["before"].get("allocated_mib", 0) + 1]
    if leaks:
        notes.append(f"device memory still allocated after close: {', '.join(leaks)}")
    return {"rows": rows, "notes": notes, "failed": bool(leaks)}


def step_transfer(plan: Plan, work: Path) -> dict[str, Any]:
    """Host-to-device and device-to-host copies of what a frame moves: its input, and its features back."""
    rows = []
    if plan.device != "cuda":
        return {"rows": rows, "notes": ["no transfers on the CPU: nothing to time"]}
    items = {"depth 480x640 float32 (H2D)": torch.rand(*CAMERA), "depth 480x640 uint16 as int16 (H2D)":
             torch.zeros(*CAMERA, dtype=torch.int16), "colour 480x640x3 uint8 (H2D)":
             torch.zeros(*CAMERA, 3, dtype=torch.uint8)}
    for name, t in items.items():
        for pinned in (False, True):
            src = t.pin_memory() if pinned else t
            res = timed(lambda s=src, nb=pinned: s.to("cuda", non_blocking=nb), "cuda", 50, 5)
            rows.append({"copy": name, "pinned": pinned, "bytes": t.numel() * t.element_size(), **res})
    for name, shape in {"ViT-S dense 384x16x16": (384, 16, 16), "ViT-L dense 1024x16x16": (1024, 16, 16),
                        "R18 dense 128x14x14": (128, 14, 14)}.items():
        for dtype in (torch.float32, torch.float16):
            d = torch.rand(*shape, device="cuda").to(dtype)
            res = timed(lambda s=d: s.cpu(), "cuda", 50, 5)
            rows.append({"copy": f"{name} {str(dtype)[6:]} (D2H)", "pinned": False,
                         "bytes": d.numel() * d.element_size(), **res})
    return {"rows": rows, "notes": []}


def step_onnx(plan: Plan, work: Path) -> dict[str, Any]:
    """ONNX Runtime as this machine has it: network-only and fused files of each family against torch, batches up
    to trt_max_batch, a second camera size, re-exported weights (and the TensorRT engine folder they would get)."""
    import onnxruntime as ort

    from defm_ros import Encoder
    from defm_ros.backends.onnx_backend import TRT_MAX_BATCH, engine_folder

    rows, notes = [], []
    size = plan.sizes[0]
    lingbot = lingbot_checkpoint(work, "cpu")  # the small config: ViT-L exports take minutes and 1.2 GB
    for model in ("defm_resnet18", "theia_tiny", "lingbot_rgbd_vitl14"):
        kw = {"weights": lingbot, "input_size": (140, 196)} if model.startswith("lingbot") else {"input_size": size}
        ref = encoder(model, "cpu", **kw)
        x = frames(ref.spec.modality, 2)
        want = ref.encode(x)
        for kind, camera in (("network only", None), ("fused", CAMERA)):
            path = work / f"{model}-{kind.split()[0]}.onnx"
            t0 = time.perf_counter()
            ref.export_onnx(path, camera_size=camera)
            export_s = time.perf_counter() - t0
            enc = Encoder(model, weights=path, backend="onnxruntime", device=plan.device)
            got = enc.encode(x)
            err = errors(got, want)
            rows.append({"model": model, "file": kind, "export_s": export_s, "providers": enc.info["providers"],
                         "device": enc.info["device"], "io_device": enc.info["extra"]["io_device"], **err,
                         "pass": verdict(err, "fp32"),
                         **timed(lambda e=enc, x=x: e.encode(x), plan.device, plan.iters, plan.warmup)})
            free(enc)
    # batches 1..trt_max_batch and a second camera size through one network-only file
    path = work / "defm_resnet18-network.onnx"
    ref = encoder("defm_resnet18", "cpu", input_size=size)
    enc = Encoder("defm_resnet18", weights=path, backend="onnxruntime", device=plan.device)
    for batch in range(1, TRT_MAX_BATCH + 1):
        x = frames("depth", batch)
        err = errors(enc.encode(x), ref.encode(x))
        rows.append({"model": "defm_resnet18", "file": "network only", "batch": batch, **err,
                     "pass": verdict(err, "fp32")})
    small = frames("depth", 2, (240, 320))
    err = errors(enc.encode(small), ref.encode(small))
    rows.append({"model": "defm_resnet18", "file": "network only", "camera": "240x320", **err,
                 "pass": verdict(err, "fp32"), "preprocessing_sessions": len(enc.backend._pre)})
    free(enc)
    # other weights re-exported under the same name: the new file's features, and another engine folder
    before = engine_folder(work / "trt", path, "fp32", TRT_MAX_BATCH, ort.__version__, 0)[0].name
    other = encoder("defm_resnet18", "cpu", seed=1, input_size=size)
    other.export_onnx(path)
    enc = Encoder("defm_resnet18", weights=path, backend="onnxruntime", device=plan.device)
    x = frames("depth", 2)
    err = errors(enc.encode(x), other.encode(x))
    after = engine_folder(work / "trt", path, "fp32", TRT_MAX_BATCH, ort.__version__, 0)[0].name
    rows.append({"model": "defm_resnet18", "file": "re-exported with other weights", **err,
                 "pass": verdict(err, "fp32") and before != after, "engine_folder_before": before,
                 "engine_folder_after": after})
    free(enc)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        notes.append("ran on ONNX Runtime's CPU provider (this onnxruntime has no CUDA/TensorRT provider): the "
                     "IO-binding path, shapes and parity are the GPU's, the providers themselves unverified")
    bad = [f"{r['model']} {r['file']}" for r in rows if not r["pass"]]
    if bad:
        notes.append(f"failed: {', '.join(bad)}")
    return {"rows": rows, "notes": notes, "failed": bool(bad)}


def _open_and_encode(enc: Any, raw: torch.Tensor, device: str) -> float:
    """Seconds from open() to the first frame's features: what an activate costs a compiled model."""
    t0 = time.perf_counter()
    enc.open()
    enc.encode(raw)
    sync(device)
    return time.perf_counter() - t0


def step_compile(plan: Plan, work: Path) -> dict[str, Any]:
    """torch.compile (the code's `compile` option) against eager: compile time, steady latency, and whether a
    deactivate/activate (close, open) compiles again."""
    from torch._dynamo.utils import counters

    rows = []
    models = ["defm_resnet18", "defm_vit_s14"] if plan.device == "cuda" else ["defm_resnet18"]
    size = plan.sizes[0]
    for model in models:
        for precision in (["fp32", "fp16"] if plan.device == "cuda" else ["fp32"]):
            eager = encoder(model, plan.device, precision=precision, input_size=size)
            raw = torch.from_numpy(frames("depth", 1)).to(eager.device)
            base = timed(lambda e=eager, r=raw: e.encode(r), plan.device, plan.iters, plan.warmup)["median_ms"]
            free(eager)
            enc = encoder(model, plan.device, precision=precision, input_size=size, lazy=True, compile=True)
            counters.clear()
            first_s = _open_and_encode(enc, raw, plan.device)
            steady = timed(lambda e=enc, r=raw: e.encode(r), plan.device, plan.iters, plan.warmup)["median_ms"]
            graphs = counters["stats"]["unique_graphs"]
            enc.close()  # deactivate, activate
            reopen_s = _open_and_encode(enc, raw, plan.device)
            rows.append({"model": model, "precision": precision, "eager_ms": base, "compiled_ms": steady,
                         "ratio_to_eager": steady / base, "first_call_s": first_s, "first_call_after_reopen_s":
                         reopen_s, "graphs_first_open": graphs,
                         "graphs_after_reopen": counters["stats"]["unique_graphs"]})
            free(enc)
            print(f"compile {model} {precision}: {rows[-1]}", flush=True)
    return {"rows": rows, "notes": ["CUDA graphs (torch.compile mode reduce-overhead) are not offered by the code"]}


STEPS: dict[str, Callable[[Plan, Path], dict[str, Any]]] = {
    "env": step_env, "parity": step_parity, "speed": step_speed, "lingbot": step_lingbot_speed,
    "memory": step_memory, "transfer": step_transfer, "onnx": step_onnx, "compile": step_compile}


# --- summary ---------------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.3f}".rstrip("0").rstrip(".")
    if isinstance(v, dict):
        return " ".join(f"{k.split('_')[0]} {_fmt(x)}" for k, x in v.items()) or "-"
    return str(v)


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def summary(work: Path, out: Path, status: Path | None) -> int:
    results = {p.stem: json.loads(p.read_text()) for p in sorted((work / "steps").glob("*.json"))}
    steps = status.read_text().split("\n") if status and status.is_file() else []
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1) + "\n")
    md = ["# GPU check", "", "Step exit statuses: " + (", ".join(s for s in steps if s) or "none recorded"), ""]
    for name in STEPS:
        if name not in results:
            continue
        r = results[name]
        md += [f"## {name} ({'ok' if r['ok'] else 'FAILED'}, {r['seconds']:.0f} s)", ""]
        md += [f"- {n}" for n in r.get("notes", [])] + ([f"- error: {r['error']}"] if r.get("error") else [])
        md += ["", table(r["rows"]) if r.get("rows") else "(no rows)", ""]
    (out / "summary.md").write_text("\n".join(md))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=[*STEPS, "summary"])
    p.add_argument("--work", type=Path, required=True, help="folder for the step files, exports and caches")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--out", type=Path, help="summary: where gpu_check.json and summary.md go")
    p.add_argument("--status", type=Path, help="summary: the script's step-status file")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.step == "summary":
        return summary(args.work, args.out or args.work, args.status)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible to torch", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        result = STEPS[args.step](Plan(args.device), args.work)
        result.setdefault("notes", [])
        ok, error = not result.pop("failed", False), None
    except Exception as exc:  # noqa: BLE001 - a step's failure is its figure: recorded, and the exit status says it
        traceback.print_exc()
        result, ok, error = {"rows": [], "notes": []}, False, f"{type(exc).__name__}: {exc}"
    result.update(ok=ok, error=error, seconds=time.perf_counter() - t0, device=args.device)
    (args.work / "steps").mkdir(exist_ok=True)
    (args.work / "steps" / f"{args.step}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
