"""A LeRobot dataset (`extract --lerobot`) against the feature bag: time and bytes per frame, in the same run.

    .venv/bin/python bench/bench_lerobot.py [--models defm_resnet18 defm_vit_s14] [--frames 40] [--rounds 2]

The bag is a robot's recording: --frames 640x480 depth frames (the real rgbd_examples frames) at 10 Hz, with
JointState at 100 Hz and Twist at 50 Hz. For each model (random weights, its default input size), each output in
its own timed block after a warm-up, cycled --rounds times (medians printed):
- feature bag: extract_bag writing the feature bag only (the baseline, ratio 1.00);
- lerobot: extract_bag writing no feature bag but the LeRobot episode, then `assemble` (the dataset's files);
- lerobot --dense: the same with the dense feature maps in the rows.
Each with the real encoder (end to end) and with a no-op encoder (features of the real shapes at no cost), whose
time is the outputs' own cost. Sizes: the feature bag's .mcap, the LeRobot dataset's files (data + meta).
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
sys.path.insert(0, str(ROOT / "bench"))
from bench_extract import NoopEncoder  # noqa: E402

from defm_ros.extract import build_encoder, extract_bag  # noqa: E402
from defm_ros.extract.lerobot import LeRobotOptions, assemble, episode_key  # noqa: E402
from defm_ros.inputs import INPUTS  # noqa: E402
from defm_ros.sample_data import sample_depth  # noqa: E402

T0 = 1_700_000_000 * 10**9


def write_robot_bag(path: Path, frames: int) -> np.ndarray:
    """The recording (see the module's docstring); returns its first frame's decoded depth."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    depth, _ = sample_depth(count=4)
    mm = [np.round(np.nan_to_num(d, nan=0, posinf=0, neginf=0) * 1000).clip(0, 65535).astype(np.uint16)
          for d in depth]

    def head(t: int) -> Any:
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9),
                                        frame_id="base")

    events = []
    for i in range(frames):
        t = T0 + i * 100_000_000
        events.append((t, "/camera/depth", T["sensor_msgs/msg/Image"](
            header=head(t), height=480, width=640, encoding="16UC1", is_bigendian=0, step=1280,
            data=np.frombuffer(mm[i % 4].tobytes(), np.uint8))))
    for i in range(frames * 10):
        t = T0 + i * 10_000_000
        events.append((t, "/joint_states", T["sensor_msgs/msg/JointState"](
            header=head(t), name=[f"j{k}" for k in range(7)], position=np.sin(np.arange(7) + i / 100),
            velocity=np.zeros(0), effort=np.zeros(0))))
    V = T["geometry_msgs/msg/Vector3"]
    for i in range(frames * 5):
        events.append((T0 + i * 20_000_000, "/cmd_vel", T["geometry_msgs/msg/Twist"](
            linear=V(x=i / 100, y=0.0, z=0.0), angular=V(x=0.0, y=0.0, z=-i / 100))))
    writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    types = {topic: msg.__msgtype__ for _, topic, msg in events}
    conns = {topic: writer.add_connection(topic, msgtype, typestore=ts) for topic, msgtype in types.items()}
    for t, topic, msg in sorted(events, key=lambda e: e[0]):
        writer.write(conns[topic], t, ts.serialize_cdr(msg, msg.__msgtype__))
    writer.close()
    return INPUTS["depth"].decode_one(events[0][2], {"depth_scale": 0.001})


def timed(bag: Path, out: Path, enc: Any, output: str) -> tuple[float, int]:
    """(wall s, bytes) of one extraction into a fresh folder: `output` is "bag", "lerobot" or "lerobot_dense"."""
    shutil.rmtree(out, ignore_errors=True)
    options = None
    if output != "bag":
        options = LeRobotOptions(root=out / "lerobot", fps=10, state=("/joint_states",), action=("/cmd_vel",),
                                 dense=output == "lerobot_dense")
    t0 = time.perf_counter()
    result = extract_bag(bag, out, encoder=enc, progress=False, write_bag=options is None, lerobot=options)
    if options is not None:
        assemble(options, [episode_key(out, "bag", options.root)])
    elapsed = time.perf_counter() - t0
    assert result.complete, result.summary()
    files = (out / "bag_features").glob("*.mcap") if options is None else options.root.rglob("*")
    return elapsed, sum(p.stat().st_size for p in files if p.is_file())


def bench_model(model: str, bag: Path, tmp: Path, frames: int, rounds: int, first: np.ndarray) -> None:
    enc = build_encoder(model=model, weights="random")
    encoders = {"": enc, " no-op": NoopEncoder(enc, first)}
    outputs = ("bag", "lerobot", "lerobot_dense")
    for e in encoders.values():
        timed(bag, tmp / "warm", e, "lerobot")  # warm-up
    runs: dict[tuple[str, str], list[tuple[float, int]]] = {(k, o): [] for k in encoders for o in outputs}
    for _ in range(rounds):
        for (k, o) in runs:
            runs[(k, o)].append(timed(bag, tmp / "out", encoders[k], o))
    c, (h, w) = enc.info["dense_channels"], enc.info["dense_size"]
    print(f"\n{model}, input {tuple(enc.info['input_size'])}, cls {enc.info['cls_channels']}, dense {c}x{h}x{w}, "
          f"{frames} frames of 640x480 depth at 10 Hz + JointState 100 Hz + Twist 50 Hz; {rounds} rounds")
    print(f"{'output':<26} {'KB/frame':>9} {'size ratio':>10} {'ms/frame':>9} {'time ratio':>10}  rounds (ms/frame)")
    for k in encoders:
        base_t = statistics.median(t for t, _ in runs[(k, "bag")])
        base_s = runs[(k, "bag")][0][1]
        for o in outputs:
            t = statistics.median(t for t, _ in runs[(k, o)])
            size = runs[(k, o)][0][1]
            each = " ".join(f"{r[0] / frames * 1e3:.1f}" for r in runs[(k, o)])
            print(f"{o + k:<26} {size / frames / 1e3:9.1f} {size / base_s:10.3f} {t / frames * 1e3:9.2f} "
                  f"{t / base_t:10.3f}  {each}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["defm_resnet18", "defm_vit_s14"])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        first = write_robot_bag(tmp / "bag", args.frames)
        for model in args.models:
            bench_model(model, tmp / "bag", tmp, args.frames, args.rounds, first)
    finally:
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
