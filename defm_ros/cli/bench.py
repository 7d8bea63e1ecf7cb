"""Time preprocessing, inference and end-to-end encode per backend on real frames (depth or colour, as
the model takes), side by side.

Each backend is timed in its own block after warm-up (never interleaved: ONNX Runtime's threads would
slow torch's), with the same weights (random unless --weights is given: timing does not depend on
them), so outputs are comparable too. With --rounds N the blocks cycle N times and each backend's
samples are pooled, so that a machine whose speed drifts (a VM's does by +-20 % within minutes) drifts
under every backend alike. Backends: torch, torch:channels_last, torch:compile, onnxruntime,
onnxruntime:trt, onnxruntime:nospin (options joined with +). The load average is printed with each
backend so that a reader can tell when other processes shared the cores.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .common import (
    CliError,
    add_device_option,
    add_model_options,
    encoder_options,
    model_size,
    output_file,
    progress,
    size_type,
)

# the Encoder's backend options (config.BACKEND_OPTIONS) a bench run can switch on; nospin is spin=False
BENCH_OPTIONS = {"torch": ("channels_last", "compile"), "onnxruntime": ("trt", "nospin")}


def backend_spec(text: str) -> tuple[str, dict[str, bool]]:
    """'onnxruntime:trt' -> ("onnxruntime", {"trt": True})."""
    name, _, opts = text.partition(":")
    if name not in BENCH_OPTIONS:
        raise argparse.ArgumentTypeError(f"backend must be one of {list(BENCH_OPTIONS)}, got {name!r}")
    flags = {o: True for o in opts.split("+") if o}
    bad = [o for o in flags if o not in BENCH_OPTIONS[name]]
    if bad:
        raise argparse.ArgumentTypeError(f"{name} options are {BENCH_OPTIONS[name]}, got {bad}")
    return name, flags


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    add_device_option(p)
    p.set_defaults(weights="random")
    p.add_argument("--backends", "-b", type=backend_spec, nargs="+", default=[("torch", {}), ("onnxruntime", {})],
                   metavar="BACKEND", help="backends to compare, first is the baseline (default: torch onnxruntime)")
    p.add_argument("--batch", type=int, default=1, help="frames per call (default 1)")
    p.add_argument("--camera-size", type=size_type, default=(480, 640), metavar="HxW",
                   help="camera frame size (default 480x640, the size of the shared real frames)")
    p.add_argument("--iters", type=int, default=50, help="timed calls per measurement (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before each block (default 10)")
    p.add_argument("--rounds", type=int, default=1, help="cycle the backends' blocks this many times and pool "
                   "them (default 1)")
    p.add_argument("--threads", type=int, default=0, help="torch and ORT intra-op threads (default: all cores)")
    p.add_argument("--json", type=output_file, default=None, metavar="FILE", help="also write the results here")


def _timed(fn: Callable[[], Any], iters: int, sync: Callable[[], None], label: str) -> np.ndarray:
    ms = np.empty(iters)
    for i in progress(range(iters), desc=label, leave=False, unit="call"):
        t0 = time.perf_counter()
        fn()
        sync()
        ms[i] = (time.perf_counter() - t0) * 1e3
    return ms


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class _Contender:
    """One backend under test: its encoder and its pooled timings."""

    def __init__(self, args: argparse.Namespace, name: str, flags: dict[str, bool], depth: Any) -> None:
        import torch

        from ..encoder import Encoder

        self.args, self.cuda = args, args.device.startswith("cuda") and torch.cuda.is_available()
        opts: dict[str, Any] = dict(flags)
        if name == "onnxruntime":
            opts["threads"], opts["spin"] = args.threads, not opts.pop("nospin", False)
        rss0 = _rss_mib()
        torch.manual_seed(0)  # the same random weights for every backend
        self.enc = enc = Encoder(**encoder_options(args), backend=name, **opts)
        self.rss_mib = _rss_mib() - rss0
        self.d = d = enc.to_device(depth)
        self.preprocess = lambda: enc.preprocess(d)  # in the backend: ONNX Runtime preprocesses in its own graph
        x = self.preprocess()
        self.infer = lambda: enc.backend.run(x)
        self.label = f"{name}{':' + '+'.join(flags) if flags else ''}"
        self.times: dict[str, list[np.ndarray]] = {"preprocess": [], "inference": [], "end_to_end": []}
        self.load: list[float] = []

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def block(self) -> None:
        """Warm up, then time preprocessing, inference and the whole encode, in that order."""
        a, enc = self.args, self.enc
        for _ in range(a.warmup):
            enc.encode(self.d)
        self.sync()
        for key, fn in (("preprocess", self.preprocess), ("inference", self.infer),
                        ("end_to_end", lambda: enc.encode(self.d))):
            self.times[key].append(_timed(fn, a.iters, self.sync, f"{self.label} {key}"))
        self.load.append(os.getloadavg()[0])

    def result(self) -> dict[str, Any]:
        import torch

        out = self.enc.encode(self.d)
        res: dict[str, Any] = {"backend": self.label, "info": self.enc.info, "load_avg_1min_after": max(self.load)}
        for k, blocks in self.times.items():
            v = np.concatenate(blocks)
            res[k] = {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95)),
                      "block_medians_ms": [float(np.median(b)) for b in blocks]}
        res["throughput_fps"] = self.args.batch * 1e3 / res["end_to_end"]["median_ms"]
        res["rss_growth_mib"] = self.rss_mib
        if self.cuda:
            free, total = torch.cuda.mem_get_info()
            res["gpu_used_mib"] = (total - free) / 2**20  # device-wide: ORT's arena is invisible to torch's counters
            res["torch_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        res["_out"] = (out.cls.float().cpu(), out.dense.float().cpu())
        return res


def _versions() -> dict[str, str]:
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    v = {"python": platform.python_version(), "torch": torch.__version__, "cpu": f"{cpu} x{os.cpu_count()}"}
    try:
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        v["onnxruntime"] = "not installed"
    if torch.cuda.is_available():
        v["gpu"] = torch.cuda.get_device_name()
    return v


def main(args: argparse.Namespace) -> int:
    import torch

    from ..models import get_spec
    from ..sample_data import sample_inputs

    if args.batch < 1 or args.iters < 1 or args.warmup < 0 or args.rounds < 1:
        raise CliError("--batch, --iters and --rounds must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    modality = get_spec(args.model).modality
    args.size = model_size(args)
    depth, names = sample_inputs(modality, args.camera_size, args.batch)
    depth = torch.from_numpy(depth)
    versions = _versions()
    print(f"defm-ros bench: {args.model} {args.size[0]}x{args.size[1]}, batch {args.batch}, "
          f"{args.camera_size[0]}x{args.camera_size[1]} {modality}, device {args.device}, {args.precision}, "
          f"torch threads {torch.get_num_threads()}, {args.rounds} round(s), load average {os.getloadavg()[0]:.2f}")
    print("  " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"  frames: {', '.join(sorted(set(names)))}")
    contenders = [_Contender(args, name, flags, depth) for name, flags in args.backends]
    for _ in range(args.rounds):
        for c in contenders:
            c.block()
            gc.collect()
    results = [c.result() for c in contenders]
    del contenders
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    base = results[0]
    head = (f"{'backend':<26} {'preproc ms':>11} {'infer ms':>10} {'e2e ms':>8} {'e2e p95':>8} {'fps':>7} "
            f"{'speedup':>8} {'max|d|':>9}")
    print(head)
    for r in results:
        diff = max(float((a - b).abs().max()) for a, b in zip(r["_out"], base["_out"], strict=True))
        r["max_abs_diff_vs_baseline"] = diff
        r["speedup_vs_baseline"] = base["end_to_end"]["median_ms"] / r["end_to_end"]["median_ms"]
        print(f"{r['backend']:<26} {r['preprocess']['median_ms']:>11.2f} {r['inference']['median_ms']:>10.2f} "
              f"{r['end_to_end']['median_ms']:>8.2f} {r['end_to_end']['p95_ms']:>8.2f} {r['throughput_fps']:>7.1f} "
              f"{r['speedup_vs_baseline']:>7.2f}x {diff:>9.1e}")
    for r in results:
        mem = f"RSS +{r['rss_growth_mib']:.0f} MiB"
        if "gpu_used_mib" in r:
            mem += f", GPU used {r['gpu_used_mib']:.0f} MiB (torch peak {r['torch_peak_mib']:.0f})"
        info = r["info"]
        rounds = "" if args.rounds == 1 else ", e2e block medians " + " ".join(
            f"{m:.1f}" for m in r["end_to_end"]["block_medians_ms"])
        print(f"  {r['backend']}: device {info['device']}, providers {info['providers'] or '-'}, {mem}, "
              f"load average up to {r['load_avg_1min_after']:.2f}{rounds}")
        for w in info["warnings"]:
            print(f"    WARNING {w}")
    if args.json:
        for r in results:
            del r["_out"]
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if not k.startswith("_")}, "versions": versions,
                       "results": results}, f, indent=1, default=str)
    return 0
