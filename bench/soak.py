"""Soak test for defm_node (issue 6): many frames through a real node process, watching memory and latency.

    .venv/bin/python bench/soak.py [--frames 20000] [--warmup 1000] [--model defm_efficientnet_b0]
                                   [--input-size 64 64] [--out soak.json]

The node runs as its own process (as on a robot); this process is the camera and the consumer.
Frames (480x640 16UC1, RealSense-like, from the shared sample data when present) are sent closed
loop: frame k+1 leaves as soon as the features of frame k arrive, which is the highest rate the node
sustains without dropping anything, and gives each frame's camera -> features latency.
Reported: the node's resident memory (VmRSS) after warm-up and at the end, the p95 latency of the
first and last 1,000 frames after warm-up, the rate, and the node's own counters from /diagnostics.
Goals: RSS growth < 20 MB, p95 drift <= 1.2x. Not part of CI (it runs for minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def depth_frames() -> list[np.ndarray]:
    from defm_ros.sample_data import data_root

    root = data_root()
    if root is not None:
        from PIL import Image as PILImage

        return [np.asarray(PILImage.open(root / "rgbd_examples" / s / "raw_depth.png")) for s in ("0", "1", "2", "4")]
    rng = np.random.default_rng(0)
    return [rng.integers(300, 8000, (480, 640), dtype=np.uint16) for _ in range(4)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--window", type=int, default=1000, help="frames in the first/last latency windows")
    ap.add_argument("--model", default="defm_efficientnet_b0")
    ap.add_argument("--input-size", type=int, nargs=2, default=[64, 64])
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for one frame's features")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args()

    from defm_ros.node.dds_profile import apply_large_data_profile

    apply_large_data_profile()  # the camera side publishes 614 KB frames too
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(150, 199)))
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"defm_soak_node_{os.getpid()}.log"
    cmd = [sys.executable, "-m", "defm_ros.node", "--ros-args",
           "-p", f"model:={args.model}", "-p", "weights:=random",
           "-p", f"input_size:=[{args.input_size[0]},{args.input_size[1]}]",
           "-p", "qos_reliability:=reliable", "-r", "~/depth:=/soak/depth"]
    log_file = open(log_path, "w")
    node_proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)

    rclpy.init()
    node = rclpy.create_node("defm_soak")
    arrived = threading.Event()
    expect = {"sec": -1, "t": 0.0}
    diags: list = []

    def on_dense(msg: Image) -> None:
        if msg.header.stamp.sec == expect["sec"]:
            expect["t"] = time.monotonic()
            arrived.set()

    node.create_subscription(Image, "/defm_node/features/dense", on_dense,
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    pub = node.create_publisher(Image, "/soak/depth", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinning = True

    def spin() -> None:
        while spinning:
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()

    msgs = []
    for d in depth_frames():
        msgs.append(Image(height=d.shape[0], width=d.shape[1], encoding="16UC1", is_bigendian=False,
                          step=d.shape[1] * 2, data=d.astype("<u2").tobytes()))
    print(f"soak: {args.frames} frames {msgs[0].width}x{msgs[0].height} 16UC1 -> {args.model} (random weights) "
          f"at input {args.input_size}, closed loop; node pid {node_proc.pid}, log {log_path}", flush=True)

    def send(k: int) -> float | None:
        msg = msgs[k % len(msgs)]
        msg.header.stamp.sec, msg.header.stamp.nanosec = k + 1, 0
        msg.header.frame_id = "soak_depth"
        expect["sec"] = k + 1
        arrived.clear()
        t0 = time.monotonic()
        pub.publish(msg)
        if not arrived.wait(args.timeout):
            return None
        return expect["t"] - t0

    try:
        deadline = time.monotonic() + 120
        while pub.get_subscription_count() == 0:  # the node subscribes once its model is loaded
            if node_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node did not come up; see {log_path}")
            time.sleep(0.1)
        while send(0) is None:  # discovery both ways (its output, our input) settles
            if time.monotonic() > deadline:
                raise RuntimeError(f"no features from the node; see {log_path}")

        lat = np.full(args.frames, np.nan)
        rss: list[tuple[int, float]] = []
        t_start = time.monotonic()
        t_warm = None
        for k in range(args.frames):
            if k == args.warmup:
                t_warm = time.monotonic()
                rss.append((k, rss_mb(node_proc.pid)))
            got = send(k + 1)
            if not rclpy.ok():  # Ctrl-C: rclpy's handler has shut the context down
                raise KeyboardInterrupt
            if got is not None:
                lat[k] = got
            if k % 500 == 499:
                rss.append((k + 1, rss_mb(node_proc.pid)))
                print(f"  {k + 1:6d} frames  rss {rss[-1][1]:7.1f} MB  p95 of last 500 "
                      f"{np.nanpercentile(lat[k - 499:k + 1], 95) * 1e3:6.2f} ms  lost {np.isnan(lat[:k + 1]).sum()}",
                      flush=True)
            if node_proc.poll() is not None:
                raise RuntimeError(f"node exited with {node_proc.returncode} after {k} frames; see {log_path}")
        t_end = time.monotonic()
        time.sleep(1.5)  # one more diagnostics period
        counters = {}
        for arr in reversed(diags):
            st = next((s for s in arr.status if s.name.endswith("/soak/depth")), None)
            if st is not None:
                counters = {kv.key: kv.value for kv in st.values
                            if kv.key in ("received_frames", "published_frames", "dropped_frames",
                                          "rejected_frames", "failed_frames")}
                break
    finally:
        spinning = False
        spinner.join(2)
        if node_proc.poll() is None:
            node_proc.send_signal(2)
            try:
                node_proc.wait(10)
            except subprocess.TimeoutExpired:
                node_proc.kill()
        log_file.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()

    after = lat[args.warmup:]
    first, last = after[:args.window], after[-args.window:]
    rss_warm, rss_end = rss[0][1], rss[-1][1]
    ks = np.array([k for k, _ in rss if k >= args.warmup], float)
    vs = np.array([v for k, v in rss if k >= args.warmup], float)
    slope = float(np.polyfit(ks, vs, 1)[0] * 1000) if len(ks) > 2 else float("nan")
    result = {
        "model": args.model, "weights": "random", "input_size": args.input_size,
        "frame": f"{msgs[0].width}x{msgs[0].height} 16UC1", "frames": args.frames, "warmup": args.warmup,
        "lost": int(np.isnan(lat).sum()),
        "rate_hz": round((args.frames - args.warmup) / (t_end - t_warm), 1),
        "rss_after_warmup_mb": round(rss_warm, 1), "rss_end_mb": round(rss_end, 1),
        "rss_max_mb": round(max(v for _, v in rss), 1), "rss_growth_mb": round(rss_end - rss_warm, 1),
        "rss_slope_mb_per_1000_frames": round(slope, 3),
        "latency_ms": {
            "first_median": round(float(np.nanmedian(first)) * 1e3, 2),
            "first_p95": round(float(np.nanpercentile(first, 95)) * 1e3, 2),
            "last_median": round(float(np.nanmedian(last)) * 1e3, 2),
            "last_p95": round(float(np.nanpercentile(last, 95)) * 1e3, 2),
        },
        "node_counters": counters,
        "elapsed_s": round(t_end - t_start, 1),
    }
    result["p95_drift"] = round(result["latency_ms"]["last_p95"] / result["latency_ms"]["first_p95"], 3)
    result["pass"] = {"rss_growth_lt_20mb": result["rss_growth_mb"] < 20,
                      "p95_drift_le_1.2": result["p95_drift"] <= 1.2}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(result["pass"].values()) and result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
