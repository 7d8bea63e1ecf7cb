"""LingBot-Depth's cost on this machine: per-frame refine latency at a token count, for the small test
config and for ViT-L (random weights: the architecture decides the cost), and the memory each needs.

    .venv/bin/python bench/bench_refiner.py [--tokens 1200] [--iters 3] [--device cpu] [--precision fp32]

One 640x480 real RGB-D scene; each model timed in its own block after one warm-up call. Peak RSS growth
(CPU) or torch's peak allocation (CUDA) is the memory figure. Ratios: ViT-L against the small config.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from defm_ros.models.lingbot import ASSUMED_VITL_CONFIG, SMALL_CONFIG, build_lingbot  # noqa: E402
from defm_ros.refiner import Refiner  # noqa: E402
from defm_ros.sample_data import sample_color, sample_depth  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_config(name: str, config: dict, args: argparse.Namespace, rgb: np.ndarray, depth: np.ndarray,
                tmp: Path) -> dict:
    torch.manual_seed(0)
    path = tmp / f"{name}.pt"
    torch.save({"model_config": config, "model": build_lingbot(config).state_dict()}, path)
    rss0 = peak_rss_mib()
    ref = Refiner(weights=path, device=args.device, precision=args.precision, num_tokens=args.tokens)
    if ref.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ref.refine(rgb, depth)  # warm-up
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        out = ref.refine(rgb, depth)
        if ref.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in ref.net.parameters()) / 1e6
    mem = (torch.cuda.max_memory_allocated() / 2**20 if ref.device.type == "cuda" else peak_rss_mib() - rss0)
    return {"name": name, "params_m": params, "median_s": float(np.median(times)), "mem_mib": mem,
            "valid": float(out.mask.float().mean()), "grid": ref.grid(*depth.shape)}


def main() -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1200)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--configs", nargs="+", default=["small", "vitl"], choices=["small", "vitl"])
    args = ap.parse_args()
    rgb, depth = sample_color((480, 640), 2)[0][1], sample_depth((480, 640), 2)[0][1]
    print(f"bench_refiner: 640x480 scene, {args.tokens} tokens, {args.device}, {args.precision}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    configs = {"small": SMALL_CONFIG, "vitl": ASSUMED_VITL_CONFIG}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            rows.append(time_config(name, configs[name], args, rgb, depth, Path(tmp)))
            r = rows[-1]
            print(f"  {r['name']:<6} {r['params_m']:7.1f}M params, grid {r['grid'][0]}x{r['grid'][1]}: "
                  f"median {r['median_s'] * 1e3:8.0f} ms per frame, memory +{r['mem_mib']:.0f} MiB")
    if len(rows) == 2:
        print(f"  -> ViT-L / small: {rows[1]['median_s'] / rows[0]['median_s']:.1f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
