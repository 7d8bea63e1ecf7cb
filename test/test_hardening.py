"""Issue 6: defm_node never crashes on bad data (SPEC §4, §6), over real topics.

One node process per input transport is fed a corpus of broken and odd frames from this process.
Broken frames are rejected (counted in /diagnostics `rejected_frames`, logged at most every 2 s);
odd but valid ones (big-endian, padded rows, NaN/inf/negative depth, resolution changes, repeated
or backwards stamps) are encoded correctly; afterwards a good frame still gives the right features.
Faults: a stale camera (diagnostics WARN, ERROR, back to OK), a failing forward pass (counted in
`failed_frames`, the next frame works), SIGINT/SIGTERM while busy (clean exit within 2 s), and
checkpoints that are truncated, carry code, or belong to another variant (non-zero exit, clear
message, nothing published).

Frames are sent one at a time: a broken frame is followed by a short pause and a valid one by the
wait for its features, so that the node's newest-frame-only input (depth-1 subscription,
LatestFrames) drops nothing and the counts are exact.
"""

from __future__ import annotations

import io
import math
import re
import signal
import struct
import subprocess
import threading
import time
import zlib

import numpy as np
import pytest

from .helpers.checkpoints import write_checkpoint
from .helpers.rosgraph import FIXTURES, Probe, start_node, stop

pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from defm_ros.features import from_msg  # noqa: E402
from defm_ros.msgs.depth import COMPRESSED_HEADER, decode_depth, encode_compressed  # noqa: E402

from .fixtures.node_with_faulty_encoder import FAULT_MM  # noqa: E402
from .helpers.messages import image  # noqa: E402

MODEL = "defm_efficientnet_b0"
SIZE = [64, 64]  # small: the corpus is about the input path, not the network
H, W = 48, 64
PAUSE = 0.05  # after a rejected frame: the worker takes it long before the next one arrives
DENSE, CLS = "/defm_node/features/dense", "/defm_node/features/cls"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Seeded weights in a file, so the node and this process hold the same model (and diagnostics can be OK)."""
    return write_checkpoint(tmp_path_factory.mktemp("hardening") / "efficientnet_b0.pth", MODEL)


@pytest.fixture(scope="module")
def encoder(ckpt):
    from defm_ros import Encoder

    return Encoder(MODEL, weights=str(ckpt), input_size=tuple(SIZE))


def depth_mm(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = np.linspace(400, 6000, h * w, dtype=np.float64).reshape(h, w) + rng.integers(0, 300, (h, w))
    d[rng.random((h, w)) < 0.05] = 0  # RealSense holes
    return d.astype(np.uint16)


class Feed:
    """This test's camera, publishing from the probe's node, and the node's outputs matched by stamp."""

    def __init__(self, probe: Probe, msg_type, topic: str) -> None:
        self.probe = probe
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = probe.node.create_publisher(msg_type, topic, qos)
        self.dense = probe.listen(Image, DENSE)
        self.cls = probe.listen(Image, CLS)
        self.diags = probe.listen(DiagnosticArray, "/diagnostics")
        self.topic = topic
        self.stamp = 100
        self.bad = 0

    def send(self, msg, stamp: int | None = None, frame_id: str = "hardening_cam") -> int:
        if stamp is None:
            self.stamp += 1
            stamp = self.stamp
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp, 0
        msg.header.frame_id = frame_id
        self.pub.publish(msg)
        return stamp

    def outputs(self, stamp: int) -> list[tuple[Image, Image]]:
        dense = [m for m in list(self.dense) if m.header.stamp.sec == stamp]
        cls = [m for m in list(self.cls) if m.header.stamp.sec == stamp]
        return list(zip(dense, cls, strict=False))

    def reject(self, msg) -> None:
        self.send(msg)
        self.bad += 1
        time.sleep(PAUSE)

    def encode(self, msg, stamp: int | None = None, timeout: float = 20.0) -> tuple[Image, Image]:
        """Send a valid frame and wait for its dense map and class token."""
        if stamp is None:
            self.stamp += 1
            stamp = self.stamp
        before = len(self.outputs(stamp))
        self.send(msg, stamp)
        assert self.probe.wait_for(lambda: len(self.outputs(stamp)) > before, timeout), f"no features for {stamp}"
        return self.outputs(stamp)[-1]

    def start(self, node: subprocess.Popen, msg) -> None:
        """Wait for the node's subscription, then resend a first frame until its features come back."""
        ok = self.probe.wait_for(lambda: self.pub.get_subscription_count() > 0 or node.poll() is not None, 90)
        assert ok and node.poll() is None, stop(node)[1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stamp = self.send(msg)
            if self.probe.wait_for(lambda s=stamp: self.outputs(s), 2.0):
                return
        pytest.fail("the node never answered: " + stop(node)[1])

    def status(self) -> tuple[int, dict] | None:
        for arr in reversed(list(self.diags)):
            for s in arr.status:
                if s.name.endswith(self.topic):
                    return s.level, {kv.key: kv.value for kv in s.values}
        return None

    def wait_status(self, predicate, timeout: float) -> tuple[int, dict]:
        self.probe.wait_for(lambda: (st := self.status()) is not None and predicate(*st), timeout)
        return self.status()

    def stream(self, msg, rate: float = 20.0) -> threading.Event:
        """Publish `msg` at `rate` in a thread until the returned event is set."""
        done = threading.Event()

        def run() -> None:
            while not done.wait(1.0 / rate):
                try:
                    self.send(msg)
                except Exception:  # the probe may be closing
                    return

        threading.Thread(target=run, daemon=True).start()
        return done


def check_features(pair: tuple[Image, Image], encoder, depth_m: np.ndarray) -> None:
    dense, cls = from_msg(pair[0]), from_msg(pair[1]).reshape(-1)
    assert np.isfinite(dense).all() and np.isfinite(cls).all()
    want = encoder.encode(depth_m)
    np.testing.assert_allclose(dense, want.dense[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(cls, want.cls[0].numpy(), atol=1e-4)


def signal_while_busy(feed: Feed, node: subprocess.Popen, msg, sig: signal.Signals) -> tuple[float, int, str]:
    """Stream frames, check the node is producing, send `sig`; the seconds it took to exit, its code, its log."""
    done = feed.stream(msg)
    try:
        n = len(feed.dense)
        assert feed.probe.wait_for(lambda: len(feed.dense) >= n + 3, 20), "node not processing before the signal"
        t0 = time.monotonic()
        node.send_signal(sig)
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - t0
    finally:
        done.set()
    code, log = stop(node)
    return took, code, log


def rejected_lines(log: str) -> list[float]:
    """Wall-clock times of the node's 'rejected frame' log lines."""
    return [float(m.group(1)) for m in re.finditer(r"\[WARN\] \[(\d+\.\d+)\] \[defm_node\]: rejected frame", log)]


# --- raw sensor_msgs/Image ------------------------------------------------------------------------------------


def assert_clean_stop(took: float, code: int, log: str, sig: int) -> None:
    """The node stopped on `sig` within 2 s, with a conventional exit code and no traceback."""
    assert took < 2.0 and code in (0, -sig, 128 + sig), (took, code, log)
    assert "Traceback" not in log, log


def test_raw_corpus_faults_and_sigint(probe, ckpt, encoder):
    node = start_node({"model": MODEL, "weights": str(ckpt), "input_size": SIZE, "qos_reliability": "reliable",
                       "stale_warn_s": 0.5, "stale_error_s": 1.5},
                      {"~/depth": "/hardening/depth"}, entry=(str(FIXTURES / "node_with_faulty_encoder.py"),))
    feed = Feed(probe, Image, "/hardening/depth")
    try:
        mm = depth_mm()
        good, metres = image(mm), mm.astype(np.float32) * np.float32(0.001)
        feed.start(node, good)

        # 1. broken frames: each is rejected and counted
        row, data, fdata = W * 2, mm.tobytes(), metres.tobytes()
        corpus = [
            image(mm, height=H, width=W, encoding="rgb8", step=W * 3, data=bytes(H * W * 3)),  # unknown encodings
            image(mm, encoding="bgra8", step=W * 4, data=bytes(H * W * 4)),
            image(mm, encoding=""),
            image(mm, encoding="8UC1", step=W, data=bytes(H * W)),
            image(mm, encoding="16UC3"),
            image(mm, encoding="32FC1"),  # mismatched: 32FC1 header on 16-bit rows
            image(mm, step=row, data=fdata),  # mismatched: 16UC1 header on 32FC1 data
            image(mm, data=data[:-1]),  # shorter than step*height
            image(mm, data=data[: len(data) // 2]),
            image(mm, data=b""),
            image(mm, data=data + b"\0"),  # longer than step*height
            image(mm, data=data * 2),
            image(mm, step=row - 1, data=bytes((row - 1) * H)),  # odd step shorter than a row
            image(mm, step=row + 1),  # odd step, data of unpadded rows
            image(mm, step=0),
            image(mm, width=0, step=0, data=b""),  # zero sizes
            image(mm, height=0, data=b""),
            image(mm, height=0, width=0, step=0, data=b""),
            image(mm, height=20000, width=20000, step=40000, data=b""),  # huge declared dims, no data
            image(mm, height=20000, width=20000, step=40000),
            image(mm, height=1, width=2**32 - 1, step=2**32 - 1, data=b""),
            image(mm, big=True, data=data[:-2]),
        ]
        for msg in corpus:
            feed.reject(msg)
        assert node.poll() is None

        # 2. odd but valid frames are decoded, not rejected
        check_features(feed.encode(image(mm, big=True)), encoder, metres)  # big-endian 16UC1
        check_features(feed.encode(image(metres, big=True)), encoder, metres)  # big-endian 32FC1
        check_features(feed.encode(image(mm, pad=3)), encoder, metres)  # odd row padding
        check_features(feed.encode(image(mm, encoding="mono16")), encoder, metres)
        weird = metres.copy()
        weird[::5, ::3], weird[1::7, ::2], weird[2::9] = np.nan, np.inf, -np.inf
        weird[3::4, 1::5] = -2.5
        check_features(feed.encode(image(weird)), encoder, weird)  # NaN/inf/negative depth
        check_features(feed.encode(image(np.full((H, W), np.nan, np.float32))), encoder,
                       np.full((H, W), np.nan, np.float32))
        big = depth_mm(60, 80, seed=1)  # resolution change mid-stream, and back
        check_features(feed.encode(image(big)), encoder, big.astype(np.float32) * np.float32(0.001))
        check_features(feed.encode(image(mm)), encoder, metres)
        tiny = np.full((1, 1), 1500, np.uint16)
        check_features(feed.encode(image(tiny)), encoder, tiny.astype(np.float32) * np.float32(0.001))
        same = feed.stamp + 1  # the same stamp twice: both are encoded, both carry it
        feed.encode(image(mm), stamp=same)
        feed.encode(image(mm), stamp=same)
        assert len(feed.outputs(same)) == 2
        back = feed.encode(image(big), stamp=7)  # stamps going backwards (a bag replayed in a loop)
        assert back[0].header.stamp.sec == 7 and back[0].header == back[1].header
        check_features(back, encoder, big.astype(np.float32) * np.float32(0.001))

        # 3. a burst of 20 broken frames: counted, logged only once or twice
        burst_start = time.time()
        for k in range(20):
            feed.reject(image(mm, data=data[: k + 1]))
        burst_end = time.time()

        # 4. a forward pass that fails costs that frame only
        marked = mm.copy()
        marked[0, 0] = FAULT_MM
        stamp = feed.send(image(marked))
        level, values = feed.wait_status(lambda lv, v: v["failed_frames"] == "1", 10)
        assert values["failed_frames"] == "1" and not feed.outputs(stamp)

        # 5. afterwards a good frame still gives the right features, and every bad frame was counted
        check_features(feed.encode(good), encoder, metres)
        level, values = feed.wait_status(lambda lv, v: v["rejected_frames"] == str(feed.bad), 10)
        assert values["rejected_frames"] == str(feed.bad), f"{feed.bad} sent: {values}"
        assert values["dropped_frames"] == "0" and values["failed_frames"] == "1", values

        # 6. the camera stops: WARN after stale_warn_s, ERROR after stale_error_s, OK again when it is back
        done = feed.stream(good, rate=10)
        try:
            level, values = feed.wait_status(lambda lv, v: lv == DiagnosticStatus.OK, 5)
        finally:
            done.set()
        assert level == DiagnosticStatus.OK, values
        stopped = time.monotonic()
        level, _ = feed.wait_status(lambda lv, v: lv == DiagnosticStatus.WARN, 5)
        assert level == DiagnosticStatus.WARN
        level, values = feed.wait_status(lambda lv, v: lv == DiagnosticStatus.ERROR, 5)
        assert level == DiagnosticStatus.ERROR, values
        assert time.monotonic() - stopped > 1.0  # stale_error_s = 1.5, less the last frame's lead
        done = feed.stream(good, rate=10)
        try:
            level, _ = feed.wait_status(lambda lv, v: lv == DiagnosticStatus.OK, 5)
        finally:
            done.set()
        assert level == DiagnosticStatus.OK

        # 7. SIGINT while frames are being processed
        took, code, log = signal_while_busy(feed, node, good, signal.SIGINT)
    finally:
        if node.poll() is None:
            stop(node)
    assert_clean_stop(took, code, log, signal.SIGINT)
    lines = rejected_lines(log)
    assert 1 <= len(lines) < feed.bad / 4, log
    in_burst = [t for t in lines if burst_start - 0.1 <= t <= burst_end + 0.1]
    assert len(in_burst) <= 2, (in_burst, burst_start, burst_end)
    assert "injected fault" in log  # the failed forward pass is logged too


# --- image_transport compressedDepth ------------------------------------------------------------------------


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.fromarray(arr).save(out, format=fmt)
    return out.getvalue()


def forged_png(width: int, height: int) -> bytes:
    """A well-formed 16-bit PNG (valid CRCs) that claims `width` x `height` but holds a few bytes of image."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(4096)))
            + chunk(b"IEND", b""))


def test_compressed_corpus_and_sigterm(probe, ckpt, encoder):
    node = start_node({"model": MODEL, "weights": str(ckpt), "input_size": SIZE, "qos_reliability": "reliable",
                       "transport": "compressedDepth"}, {"~/depth": "/hardening_c/depth"})
    feed = Feed(probe, CompressedImage, "/hardening_c/depth/compressedDepth")
    try:
        mm = depth_mm()
        fmt16, data16 = encode_compressed(mm)
        fmt32, data32 = encode_compressed(mm.astype(np.float32) * np.float32(0.001))
        header16, png16 = data16[: COMPRESSED_HEADER.size], data16[COMPRESSED_HEADER.size:]
        good = CompressedImage(format=fmt16, data=data16)
        feed.start(node, good)

        corpus = [
            (fmt16, b""),  # broken headers
            (fmt16, data16[:5]),
            (fmt16, header16),
            (fmt32, COMPRESSED_HEADER.pack(0, math.nan, math.nan) + data32[COMPRESSED_HEADER.size:]),
            (fmt32, COMPRESSED_HEADER.pack(0, 0.0, 0.0) + data32[COMPRESSED_HEADER.size:]),
            (fmt16, data16[: len(data16) // 2]),  # truncated PNGs
            (fmt16, data16[: COMPRESSED_HEADER.size + 40]),
            (fmt16, header16 + png16[:8] + bytes(len(png16) - 8)),
            (fmt16, header16 + forged_png(12000, 12000)),  # a size its bytes cannot hold
            (fmt16, header16 + forged_png(20000, 20000)),
            (fmt16, header16 + png_bytes((mm >> 8).astype(np.uint8))),  # 8-bit, colour, JPEG payloads
            (fmt16, header16 + png_bytes(np.zeros((H, W, 3), np.uint8))),
            (fmt16, header16 + png_bytes(np.zeros((H, W), np.uint8), "JPEG")),
            ("rgb8; jpeg compressed bgr8", data16),  # wrong format strings
            ("16UC1; compressedDepth rvl", data16),
            ("8UC1; compressedDepth png", data16),
            ("", data16),
            ("png", data16),
        ]
        for fmt, data in corpus:
            feed.reject(CompressedImage(format=fmt, data=data))
        assert node.poll() is None

        compressed32 = CompressedImage(format=fmt32, data=data32)
        check_features(feed.encode(compressed32), encoder, decode_depth(compressed32))
        check_features(feed.encode(good), encoder, mm.astype(np.float32) * np.float32(0.001))
        level, values = feed.wait_status(lambda lv, v: v["rejected_frames"] == str(feed.bad), 10)
        assert values["rejected_frames"] == str(feed.bad) and values["dropped_frames"] == "0", values

        took, code, log = signal_while_busy(feed, node, good, signal.SIGTERM)
    finally:
        if node.poll() is None:
            stop(node)
    assert_clean_stop(took, code, log, signal.SIGTERM)


# --- checkpoint faults at start-up --------------------------------------------------------------------------


class _RunsCode:
    """Pickled as a call to open(path, "w"): loading it unsafely would create `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_bad_checkpoints_exit_nonzero_before_publishing(probe, ckpt, tmp_path):
    import torch

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    marker = tmp_path / "code_ran"
    with_code = tmp_path / "with_code.pth"
    torch.save({"model": {"weight": _RunsCode(str(marker))}}, with_code)
    other = tmp_path / "resnet18.pth"
    write_checkpoint(other, "defm_resnet18", seed=None)

    dense = probe.listen(Image, DENSE)
    info = probe.listen(String, "/defm_node/features/info", latched=True)
    cases = {truncated: "truncated or corrupt", with_code: "refused (weights_only=True)",
             other: "does not fit defm_efficientnet_b0"}
    nodes = {path: start_node({"model": MODEL, "weights": str(path), "input_size": SIZE}) for path in cases}
    results = {}
    for path, proc in nodes.items():
        try:
            proc.wait(120)
        finally:
            results[path] = stop(proc)
    for path, why in cases.items():
        code, log = results[path]
        assert code not in (0, None), log
        assert "defm_node: fatal: CheckpointError" in log and why in log, log
        assert "Traceback" not in log, log
    assert "It looks like a defm_resnet18 checkpoint" in results[other][1]
    assert not marker.exists()
    time.sleep(0.5)
    assert not dense and not info
