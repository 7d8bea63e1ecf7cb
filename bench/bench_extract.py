"""Extraction keeps the device fed: extract_bag against a pure batched encode of the same frames, and
the CPU work per frame that does not overlap with the forward pass, in the same run.

    .venv/bin/python bench/bench_extract.py [--model defm_resnet18] [--batch 8] [--frames 160] [--rounds 3]
                                            [--transport raw|compressedDepth] [--dataset]

The bag holds --frames 640x480 depth frames (the real rgbd_examples frames, mcap): 16UC1 images, or
compressedDepth PNGs (what realsense2_camera records with image_transport). Blocks, each
after a warm-up and each in its own timed block, cycled --rounds times (the medians are printed):
- encode: Encoder.encode + .numpy() on the decoded frames in batches: the ceiling for extraction;
- extract: extract_bag writing the feature bag, with the reader thread (prefetch) and without (inline);
- no-op: extract_bag with an encoder that returns features of the real shapes at no cost. Its wall time
  per frame is the most a device could be fed; the main thread's CPU time per frame (thread_time,
  a run of --frames less a run of 2 batches, so that opening and closing cancel) is the work that cannot
  overlap with a forward pass.
Random weights unless --weights: the forward pass costs the same.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from defm_ros.extract import build_encoder, extract_bag  # noqa: E402
from defm_ros.inputs import INPUTS  # noqa: E402
from defm_ros.msgs.depth import encode_compressed  # noqa: E402
from defm_ros.sample_data import sample_depth  # noqa: E402


def write_depth_bag(path: Path, frames: int, transport: str) -> list[Any]:
    """An mcap rosbag2 of `frames` 640x480 depth images; returns the messages' decoded depth."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    image, compressed, header, stamp = (ts.types[t] for t in ("sensor_msgs/msg/Image",
                                        "sensor_msgs/msg/CompressedImage", "std_msgs/msg/Header",
                                        "builtin_interfaces/msg/Time"))
    typ = compressed if transport == "compressedDepth" else image
    depth, _ = sample_depth(count=4)
    mm = [np.round(np.nan_to_num(d, nan=0, posinf=0, neginf=0) * 1000).clip(0, 65535).astype(np.uint16)
          for d in depth]
    writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    topic = "/camera/depth/image_rect_raw" + ("/compressedDepth" if typ is compressed else "")
    conn = writer.add_connection(topic, typ.__msgtype__, typestore=ts)
    decoded = []
    for i in range(frames):
        t = 1_700_000_000 * 10**9 + i * 33_333_333
        head = header(stamp=stamp(sec=t // 10**9, nanosec=t % 10**9), frame_id="camera_depth")
        if typ is compressed:
            fmt, data = encode_compressed(mm[i % 4])
            msg = compressed(header=head, format=fmt, data=np.frombuffer(data, np.uint8))
        else:
            msg = image(header=head, height=480, width=640, encoding="16UC1", is_bigendian=0, step=1280,
                        data=np.frombuffer(mm[i % 4].tobytes(), np.uint8))
        writer.write(conn, t, ts.serialize_cdr(msg, typ.__msgtype__))
        if i < 4:
            decoded.append(INPUTS["depth"].decode_one(msg, {"depth_scale": 0.001}))
    writer.close()
    return [decoded[i % 4] for i in range(frames)]


class NoopEncoder:
    """The real encoder's info and output shapes, at no cost: what is left is extraction's own work."""

    def __init__(self, enc: Any, x: np.ndarray) -> None:
        self.info = enc.info
        cls, dense = enc.encode(x[None]).numpy()
        self._cls, self._dense = cls[0], dense[0]

    def encode(self, xs: np.ndarray) -> Any:
        n, cls, dense = len(xs), self._cls, self._dense

        class Features:
            def numpy(self, dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:  # Features.numpy's signature
                c, d = (cls, dense) if dtype is None else (cls.astype(dtype), dense.astype(dtype))
                return np.broadcast_to(c, (n, *c.shape)), np.broadcast_to(d, (n, *d.shape))

        return Features()


def timed_extract(bag: Path, out: Path, enc: Any, batch: int, prefetch: bool, dataset: bool, limit: int = 0
                  ) -> tuple[float, float, int]:
    """(wall s, main-thread CPU s, frames written) of one extract_bag into a fresh folder."""
    shutil.rmtree(out, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.thread_time()
    result = extract_bag(bag, out, encoder=enc, batch=batch, progress=False, prefetch=prefetch, dataset=dataset,
                         limit=limit)
    return time.perf_counter() - t0, time.thread_time() - c0, result.frames_written


def timed_encode(enc: Any, frames: list[np.ndarray], batch: int) -> float:
    t0 = time.perf_counter()
    for k in range(0, len(frames), batch):
        enc.encode(np.stack(frames[k:k + batch])).numpy()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="defm_resnet18")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=160)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--transport", choices=("raw", "compressedDepth"), default="raw")
    ap.add_argument("--dataset", action="store_true", help="also write the .npz dataset")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        frames = write_depth_bag(tmp / "bag", args.frames, args.transport)
        enc = build_encoder(model=args.model, weights=args.weights)
        noop = NoopEncoder(enc, frames[0])
        n, small = args.frames, 2 * args.batch
        print(f"{args.model}, batch {args.batch}, {n} frames of 640x480 {args.transport} depth, input "
              f"{enc.info['input_size']}, dense {enc.info['dense_channels']}x{enc.info['dense_size']}; writing the "
              f"feature bag{' and the dataset' if args.dataset else ''}")
        timed_encode(enc, frames[: 2 * args.batch], args.batch)  # warm-up
        for prefetch in (True, False):
            timed_extract(tmp / "bag", tmp / "warm", enc, args.batch, prefetch, args.dataset, limit=small)
        runs: dict[str, list[float]] = {k: [] for k in ("encode", "extract", "inline", "noop_wall", "noop_cpu",
                                                        "inline_noop_wall", "inline_noop_cpu")}
        for _ in range(args.rounds):
            runs["encode"].append(n / timed_encode(enc, frames, args.batch))
            for key, prefetch in (("extract", True), ("inline", False)):
                wall, _, written = timed_extract(tmp / "bag", tmp / "out", enc, args.batch, prefetch, args.dataset)
                assert written == n, written
                runs[key].append(n / wall)
            for key, prefetch in (("noop", True), ("inline_noop", False)):
                run = (tmp / "bag", tmp / "out", noop, args.batch, prefetch, args.dataset)
                wall, cpu, _ = timed_extract(*run)
                wall0, cpu0, _ = timed_extract(*run, limit=small)
                runs[f"{key}_wall"].append((wall - wall0) / (n - small) * 1e3)
                runs[f"{key}_cpu"].append((cpu - cpu0) / (n - small) * 1e3)
    finally:
        shutil.rmtree(tmp)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"{'pure batched encode':<30}{med['encode']:7.1f} frames/s  (1.00x)")
    for key, label in (("extract", "extract, reader thread"), ("inline", "extract, inline (no prefetch)")):
        each = " ".join(f"{v / e:.3f}" for v, e in zip(runs[key], runs["encode"], strict=True))
        print(f"{label:<30}{med[key]:7.1f} frames/s  ({med[key] / med['encode']:.3f}x; rounds {each})")
    for key, label in (("noop", "reader thread"), ("inline_noop", "inline")):
        print(f"no-op encoder, {label:<13} {med[f'{key}_wall']:5.2f} ms/frame wall, "
              f"{med[f'{key}_cpu']:5.2f} ms/frame CPU on the inference thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
