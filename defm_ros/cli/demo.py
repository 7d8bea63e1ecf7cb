"""Encode real depth frames and write, per frame, the depth image beside a PCA view of its DeFM
features (the main job of `make demo`). Offline, it explains how to get real weights and only then
runs with random weights."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from ..models.weights import CheckpointError, resolve_weights
from ..sample_data import MODES, UNITS
from .common import CliError, add_device_option, add_model_options, count_type, encoder_options, progress

log = logging.getLogger("defm_ros")

BANNER = """
==============================================================================
  NO DeFM WEIGHTS AVAILABLE: {reason}
  Continuing with RANDOM WEIGHTS. The timings are real; the PCA images only
  show the pipeline working and carry no meaning.
==============================================================================
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", type=Path,
                   help="depth PNGs or folders (default: the shared defm_examples and rgbd_examples)")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out/)")
    p.add_argument("--limit", type=count_type, default=0, help="at most this many frames (0: all)")
    p.add_argument("--unit", choices=list(UNITS), default=None,
                   help="unit of the stored depth (default: by type: 16-bit mm, 8-bit cm, float m)")
    p.add_argument("--mode", choices=list(MODES), default=None,
                   help="metric depth, or relative (monocular) depth (default metric; the shipped drawers/ "
                        "samples are relative)")
    add_model_options(p)
    add_device_option(p)


def _frames(args: argparse.Namespace) -> list:
    """Every input frame, read and checked before the (slow) model load: a wrong file fails at once."""
    from ..sample_data import data_root, depth_pngs, load_depth_png

    roots = list(args.inputs)
    if not roots:
        root = data_root()
        if root is None:
            raise CliError("no input given and no shared data found (set DEFM_ROS_DATA or pass PNG paths)")
        roots = [root / "defm_examples", root / "rgbd_examples"]
    if missing := [str(r) for r in roots if not r.exists()]:
        raise CliError(f"{', '.join(missing)}: no such file or folder")
    files = [f for r in roots for f in depth_pngs(r)]
    if not files:
        raise CliError(f"no depth PNGs in {', '.join(map(str, roots))}")
    try:
        return [load_depth_png(f, args.unit, args.mode) for f in files[: args.limit or None]]
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _weights(args: argparse.Namespace) -> str:
    from ..models import get_spec

    if args.weights is not None:
        return args.weights
    try:
        return str(resolve_weights(get_spec(args.model), None))
    except CheckpointError as exc:
        print(BANNER.format(reason=exc))
        return "random"


def main(args: argparse.Namespace) -> int:
    from PIL import Image
    from tqdm import tqdm

    from ..encoder import Encoder
    from ..pca import depth_colormap, pca_rgb

    frames = _frames(args)
    enc = Encoder(**{**encoder_options(args), "weights": _weights(args)})
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{enc.spec.name} on {enc.device} ({enc.info['precision']}), input {enc.geometry.resize}, "
          f"dense {enc.info['dense_channels']}x{enc.info['dense_size'][0]}x{enc.info['dense_size'][1]}, "
          f"cls {enc.info['cls_channels']}; {len(frames)} frames -> {args.out}/")
    enc.encode(np.ones((64, 64), np.float32))  # warm-up, not timed
    times = []
    for frame in progress(frames, unit="frame", leave=False):
        path = frame.path
        t0 = time.perf_counter()
        x = enc.preprocess(frame.depth, frame.mode)
        t1 = time.perf_counter()
        cls, dense = enc.backend.run(x)
        t2 = time.perf_counter()
        times.append((t1 - t0, t2 - t1))
        h, w = frame.depth.shape
        vis = frame.depth if frame.mode == "metric" else 10.0 * np.exp(-5.0 * frame.depth / max(frame.depth.max(), 1))
        hh, ww = enc.info["dense_size"]
        panel = np.concatenate([depth_colormap(vis), pca_rgb(dense[0, :, :hh, :ww], (h, w))], axis=1)
        name = f"{path.parent.name}_{path.stem}_pca.png"
        Image.fromarray(panel).save(args.out / name)
        tqdm.write(f"{path.parent.name}/{path.name:<18} {w}x{h} {frame.assumed:<36} "
                   f"preprocess {1e3 * (t1 - t0):6.1f} ms  inference {1e3 * (t2 - t1):6.1f} ms  "
                   f"|cls| {float(cls.norm()):.2f}  -> {name}")
    pre, inf = (np.median([t[i] for t in times]) * 1e3 for i in (0, 1))
    print(f"median per frame: preprocess {pre:.1f} ms, inference {inf:.1f} ms, total {pre + inf:.1f} ms "
          f"({1e3 / (pre + inf):.1f} Hz); wrote {len(times)} images to {args.out}/")
    if enc.info["random_weights"]:
        print("(RANDOM WEIGHTS: see the note above for how to get the real checkpoint)")
    return 0
