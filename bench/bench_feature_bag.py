"""Feature bags a user can keep: bytes per frame and write cost per frame for each output dtype and
mcap chunk compression, against float32 uncompressed in the same run.

    .venv/bin/python bench/bench_feature_bag.py [--model defm_vit_s14] [--size 224x308] [--frames 60]

The features are the model's on the real 640x480 depth frames (random weights unless --weights: a
trained network's maps may compress differently). Each choice is written in its own block after one
warm-up bag; the time is the FeatureBag's write + close per frame, the size the .mcap's.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from defm_ros.config import BAG_COMPRESSIONS, OUTPUT_DTYPES, parse_size  # noqa: E402
from defm_ros.encoder import Encoder  # noqa: E402
from defm_ros.extract.sinks import FeatureBag  # noqa: E402
from defm_ros.sample_data import sample_depth  # noqa: E402


def write(path: Path, info: dict, feats: list, dtype: str, compression: str) -> tuple[float, int]:
    """Seconds to write and close a bag of `feats`, and its .mcap size in bytes."""
    bag = FeatureBag(path, info, {}, "bench", dtype, segment_frames=10**6, compression=compression)
    bag.open(resume=False)
    t0 = time.perf_counter()
    for k, (cls, dense) in enumerate(feats):
        bag.write("/camera/depth", 10**18 + k * 33_333_333, bag.header(10**18 + k, "cam"), cls, dense)
    bag.commit(complete=True)
    elapsed = time.perf_counter() - t0
    return elapsed, sum(p.stat().st_size for p in path.glob("*.mcap"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="defm_vit_s14")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--size", type=parse_size, default=(224, 308))
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()
    enc = Encoder(args.model, weights=args.weights, input_size=args.size)
    depth, _ = sample_depth(count=4)
    outs = [enc.encode(depth[k % len(depth)]).numpy() for k in range(4)]
    feats = [(outs[k % 4][0][0], outs[k % 4][1][0]) for k in range(args.frames)]
    c, (h, w) = enc.info["dense_channels"], enc.info["dense_size"]
    print(f"{args.model} at {args.size[0]}x{args.size[1]}: dense {c}x{h}x{w}, {args.frames} frames per bag")
    rows, tmp = [], Path(tempfile.mkdtemp())
    try:
        write(tmp / "warmup", enc.info, feats[:5], "float32", "zstd")
        for dtype in OUTPUT_DTYPES:
            for compression in BAG_COMPRESSIONS:
                s, size = write(tmp / f"{dtype}_{compression}", enc.info, feats, dtype, compression)
                rows.append((dtype, compression, size / args.frames, s / args.frames))
    finally:
        shutil.rmtree(tmp)
    base_size, base_time = rows[0][2], rows[0][3]
    print(f"{'dtype':<8} {'compression':<11} {'KB/frame':>9} {'size ratio':>10} {'MB/s at 30 Hz':>13} "
          f"{'write ms/frame':>14} {'time ratio':>10}")
    for dtype, compression, size, sec in rows:
        print(f"{dtype:<8} {compression:<11} {size / 1e3:9.1f} {size / base_size:10.2f} {size * 30 / 1e6:13.1f} "
              f"{sec * 1e3:14.2f} {sec / base_time:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
