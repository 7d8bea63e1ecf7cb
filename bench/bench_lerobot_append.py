"""Appending episodes to a LeRobot dataset (`extract --lerobot` over many bags): time per append as the dataset
grows, with meta/episodes split into files of EPISODES_PER_FILE rows against one file for all (the writer before
the split, which rewrote every episode's row at each append), in the same run.

    .venv/bin/python bench/bench_lerobot_append.py [--episodes 300] [--rows 100] [--channels 384]

Each episode: --rows rows of a --channels class token, a 7-joint state and a 6-element command (no dense maps).
Each layout in its own block, in a fresh dataset; printed: ms per append over the last 50 appends (median).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from defm_ros.extract import lerobot_format  # noqa: E402

LAST = 50


def episode(rows: int, channels: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"timestamp": (np.arange(rows) / 10).astype(np.float32), "frame_index": np.arange(rows, dtype=np.int64),
            "observation.cam_embedding": rng.standard_normal((rows, channels)).astype(np.float32),
            "observation.cam_stamp_ns": np.arange(rows, dtype=np.int64),
            "observation.state": rng.standard_normal((rows, 7)).astype(np.float32),
            "action": rng.standard_normal((rows, 6)).astype(np.float32)}


def ms_per_append(episodes: int, rows: int, channels: int) -> float:
    """Median ms of the last LAST appends of `episodes`, into a new dataset."""
    tmp = Path(tempfile.mkdtemp())
    try:
        writer, times = lerobot_format.LeRobotWriter(tmp / "lerobot"), []
        for ep in range(episodes):
            cols = episode(rows, channels, ep)
            start = time.perf_counter()
            writer.append(cols, {}, 10, "pick", {"defm_ros/episode": f"e{ep}"})
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times[-LAST:])
    finally:
        shutil.rmtree(tmp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--channels", type=int, default=384)
    args = ap.parse_args()
    split = lerobot_format.EPISODES_PER_FILE
    print(f"{args.episodes} episodes of {args.rows} rows, cls {args.channels}; ms per append over the last {LAST}")
    results = {}
    for name, per_file in (("one file", args.episodes + 1), (f"{split} per file", split)):
        lerobot_format.EPISODES_PER_FILE = per_file
        results[name] = ms_per_append(args.episodes, args.rows, args.channels)
    base = results["one file"]
    for name, ms in results.items():
        print(f"{name:>16}: {ms:7.1f} ms/append  ratio {ms / base:.2f}")


if __name__ == "__main__":
    main()
