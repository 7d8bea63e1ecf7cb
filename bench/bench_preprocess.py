"""Our metric normalization vs upstream defm.utils.preprocess_depth_image on a real 640x480 frame.

Each side is timed in its own block after warm-up (never interleaved) and the ratio is printed;
outputs are checked equal first. Goal (issue 2): >= 4x faster on a 2-core CPU.
    .venv/bin/python bench/bench_preprocess.py [--size 224] [--repeat 200]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from defm_ros.models.registry import FAMILIES
from defm_ros.preprocess.depth import InputGeometry, normalize_depth
from defm_ros.sample_data import data_root, load_depth_png


def timed(fn, repeat: int) -> np.ndarray:
    for _ in range(10):
        fn()
    out = np.empty(repeat)
    for i in range(repeat):
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from defm.utils import preprocess_depth_image
    root = data_root()
    depth = load_depth_png(root / "rgbd_examples" / "0" / "raw_depth.png").depth if root else \
        np.random.default_rng(0).uniform(0.3, 8, (480, 640)).astype(np.float32)
    geom = InputGeometry.for_model((args.size, args.size), 14, pad=False)
    ref = preprocess_depth_image(depth, target_size=args.size, patch_size=14)
    ours = normalize_depth(torch.from_numpy(depth), geom, *FAMILIES["vit"].stats)
    err = (ref - ours).abs().max().item()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        up = timed(lambda: preprocess_depth_image(depth, target_size=args.size, patch_size=14), args.repeat)
    me = timed(lambda: normalize_depth(torch.from_numpy(depth), geom, *FAMILIES["vit"].stats), args.repeat)
    print(f"640x480 depth -> {args.size}x{args.size}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"max abs diff {err:.2e}")
    print(f"{'':<28}{'median ms':>10}{'p95 ms':>10}")
    print(f"{'upstream preprocess_depth_image':<28}{np.median(up):>10.2f}{np.percentile(up, 95):>10.2f}")
    print(f"{'defm_ros normalize_depth':<28}{np.median(me):>10.2f}{np.percentile(me, 95):>10.2f}")
    print(f"speed-up (median): {np.median(up) / np.median(me):.2f}x")


if __name__ == "__main__":
    main()
