"""Newest-frame slots, shape grouping, stream statistics, the frame processor and the inference loop,
without a ROS graph (stand-in encoder, inputs and publishers)."""

from __future__ import annotations

import threading
import time

import numpy as np

from defm_ros.inputs import DepthInput, StampPairer, group_by_shape
from defm_ros.node.pipeline import (
    Camera,
    Frame,
    InferenceLoop,
    LatestFrames,
    Processor,
    SequenceGaps,
    StreamStats,
)
from defm_ros.node.reliability import Handover


def test_only_the_newest_frame_is_kept_and_the_rest_counted():
    slots = LatestFrames(2)
    for k in range(5):
        slots.put(0, f"a{k}")
    slots.put(1, "b0")
    frames = slots.take(timeout=0.1)
    assert [(f.camera, f.msg) for f in frames] == [(0, "a4"), (1, "b0")]
    assert slots.dropped == [4, 0]
    assert slots.take(timeout=0.01) == []


def test_take_waits_for_the_other_cameras_within_the_window():
    slots = LatestFrames(3)
    slots.put(0, "a")
    threading.Timer(0.05, lambda: (slots.put(1, "b"), slots.put(2, "c"))).start()
    t = time.monotonic()
    frames = slots.take(timeout=1.0, window=1.0)
    assert len(frames) == 3 and time.monotonic() - t < 0.5
    slots.put(0, "a")
    t = time.monotonic()
    assert len(slots.take(timeout=1.0, window=0.05)) == 1  # the window is a bound, not a wait for all
    assert time.monotonic() - t < 0.5


def test_frames_of_different_size_get_their_own_pass():
    slots = LatestFrames(3)
    shapes = [(480, 640), (240, 320), (480, 640)]
    for cam in range(3):
        slots.put(cam, cam)
    items = [(f, np.zeros(s)) for f, s in zip(slots.take(0.1), shapes, strict=True)]
    groups = group_by_shape(items)
    assert sorted(len(g) for g in groups) == [1, 2]


def test_stream_stats_rates_latency_and_staleness():
    s = StreamStats(window=10.0)
    assert s.staleness(5.0) is None and np.isnan(s.percentiles(s.latency_recv)[0])
    for k in range(31):
        s.on_input(k / 30)
    for k in range(10):
        s.on_output(k / 10, 0.010 + 0.001 * k, 0.020)
    assert abs(s.rate(s.received, 1.0) - 30.0) < 1e-6 and abs(s.rate(s.published, 1.0) - 10.0) < 1e-6
    med, p95 = s.percentiles(s.latency_recv)
    assert abs(med - 0.0145) < 1e-9 and 0.0175 < p95 <= 0.019
    assert abs(s.staleness(3.0) - 2.0) < 1e-9 and s.total_in == 31 and s.total_out == 10


def test_sequence_gaps_count_what_dds_overwrote():
    gaps = SequenceGaps()
    assert [gaps.observe(s) for s in (7, 8, 12, 13)] == [1, 1, 4, 1]  # 9, 10, 11 never arrived
    assert gaps.dropped == 3
    assert gaps.observe(2) == 1 and gaps.dropped == 3  # a restarted driver starts counting afresh
    assert gaps.observe(None) == 1 and gaps.last is None  # several publishers: no counting ...
    assert gaps.observe(9) == 1 and gaps.dropped == 3  # ... and no gap across that stretch


def test_input_rate_counts_the_frames_that_never_arrived():
    s = StreamStats(window=10.0)
    s.on_input(0.0)
    for k in range(1, 11):
        s.on_input(k / 10, frames=3)  # every third frame of a 30 Hz camera reached the node
    assert abs(s.rate(s.received, 1.0) - 30.0) < 1e-6 and s.total_in == 31


class Header:
    def __init__(self, stamp: int) -> None:
        self.stamp = stamp


class Msg:
    """A deserialized depth message: 16UC1 rows of `mm`."""

    def __init__(self, mm: np.ndarray, stamp: int, encoding: str = "16UC1") -> None:
        self.header = Header(stamp)
        self.height, self.width = mm.shape
        self.encoding, self.is_bigendian, self.step = encoding, False, mm.shape[1] * 2
        self.data = mm.astype("<u2").tobytes()


PARAMS = {"depth_scale": 0.001, "output_dtype": "float32"}


class FakeEncoder:
    """cls = the batch's mean depth per frame; dense = the depth itself; fails on a frame of all 4.242 m."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.dtypes: list[str] = []

    def encode(self, depth: np.ndarray):
        self.batches.append(len(depth))
        if np.isclose(depth, 4.242).all(axis=(1, 2)).any():
            raise RuntimeError("CUDA out of memory")

        class Out:
            def numpy(self_inner, dtype):
                self.dtypes.append(dtype)
                return depth.mean(axis=(1, 2))[:, None], depth[:, None]

        return Out()


def _processor(cameras: int = 2, stopping: bool = False):
    inputs = [DepthInput(f"/cam{i}/depth") for i in range(cameras)]
    stats = [StreamStats() for _ in inputs]
    published, logs = [], []
    enc = FakeEncoder()
    proc = Processor(enc, inputs, stats, deserialize=lambda raw, kind: raw,
                     publish=lambda f, header, cls, dense, x: published.append((f.camera, header.stamp,
                                                                                round(float(cls[0]), 4))),
                     warn=logs.append, error=logs.append, stopping=lambda: stopping)
    return proc, enc, stats, published, logs


def _frame(camera: int, mm: np.ndarray, stamp: int, **kw) -> Frame:
    return Frame(camera, {"depth": Msg(mm, stamp, **kw)}, received=0.0)


def test_processor_batches_equal_sizes_and_publishes_each_frame_with_its_header():
    proc, enc, stats, published, logs = _processor(3)
    frames = [_frame(0, np.full((4, 6), 1000), 7), _frame(1, np.full((4, 6), 2000), 8),
              _frame(2, np.full((8, 6), 3000), 9)]
    proc.process(frames, PARAMS)
    assert enc.batches == [2, 1] and list(proc.batch_sizes) == [2, 1] and len(proc.inference_s) == 2
    assert sorted(published) == [(0, 7, 1.0), (1, 8, 2.0), (2, 9, 3.0)] and not logs
    proc.process([_frame(0, np.full((4, 6), 1000), 10)], {**PARAMS, "depth_scale": 0.0005})  # runtime parameter change
    assert published[-1] == (0, 10, 0.5)


def test_processor_rejects_bad_frames_and_survives_a_failing_forward_pass():
    proc, enc, stats, published, logs = _processor(2)
    proc.process([_frame(0, np.full((4, 6), 1000), 1, encoding="rgb8"), _frame(1, np.full((4, 6), 1000), 2)],
                 PARAMS)
    assert stats[0].rejected == 1 and published == [(1, 2, 1.0)]
    assert "rejected frame on /cam0/depth: unsupported depth encoding 'rgb8'" in logs[0]
    proc.process([_frame(0, np.full((4, 6), 4242), 3), _frame(1, np.full((4, 6), 4242), 4)], PARAMS)
    assert stats[0].errors == stats[1].errors == 1 and len(published) == 1
    assert "inference failed, frame dropped: RuntimeError: CUDA out of memory" in logs[-1]
    proc.process([_frame(0, np.full((4, 6), 1000), 5)], PARAMS)
    assert published[-1] == (0, 5, 1.0)


def test_processor_counts_a_failing_publish_but_not_during_shutdown():
    for stopping, errors in ((False, 1), (True, 0)):
        proc, _, stats, _, logs = _processor(1, stopping=stopping)

        def publish(*args):
            raise RuntimeError("publisher's context is invalid")

        proc.publish = publish
        proc.process([_frame(0, np.full((4, 6), 1000), 1)], PARAMS)
        assert stats[0].errors == errors and bool(logs) == (not stopping)


def test_camera_counts_the_primary_topic_and_pairs():
    class Paired(DepthInput):
        def __init__(self) -> None:
            super().__init__("/cam/depth")
            self.pairer = StampPairer(("depth", "color"))

        def pair(self, role, msg):
            return self.pairer.put(role, msg[0], msg)

    cam = Camera(Paired(), pubs={}, gate=None)
    assert cam.arrived("color", (5, "c"), None, 1.0) is None and cam.stats.total_in == 0
    assert cam.arrived("depth", (5, "d"), 10, 1.1) == {"depth": (5, "d"), "color": (5, "c")}
    assert cam.arrived("depth", (6, "d"), 13, 1.2) is None
    assert cam.stats.total_in == 1 + 3 and cam.sequences.dropped == 2  # 11 and 12 never arrived
    assert cam.reliability is None
    cam.subs["depth"] = Handover()
    cam.subs["depth"].plan(("reliable",))
    assert cam.reliability == "reliable"


class Gate:
    closed = False


def test_inference_loop_gates_cameras_during_a_batch_and_pauses_cleanly():
    seen_closed, processed = [], []
    cams = [Camera(DepthInput("/a"), {}, Gate()), Camera(DepthInput("/b"), {}, Gate())]
    cams[0].sequences.observe(1)  # only cameras whose publisher numbers frames are gated

    class Proc:
        def process(self, frames, p):
            seen_closed.append([c.gate.closed for c in cams])
            processed.append([f.msg for f in frames])
            time.sleep(0.2)

    wakes = []
    loop = InferenceLoop(wake=lambda: wakes.append(1))
    frames = LatestFrames(2)
    t = threading.Thread(target=loop.run, args=(lambda: {"batch_window_ms": 0.0}, lambda: True))
    t.start()
    frames.put(0, "x")
    time.sleep(0.3)
    assert processed == []  # not resumed: nothing is taken
    loop.resume(frames, Proc(), cams)
    assert _wait(lambda: processed == [["x"]])
    frames.put(1, "y")  # arrives while the first batch is in flight
    loop.pause()  # returns after the batch in flight; the parked frame is let go
    frames.put(0, "z")
    time.sleep(0.3)
    assert processed == [["x"]] and seen_closed == [[True, False]]
    assert all(not c.gate.closed for c in cams) and wakes == [1]
    loop.stop()
    t.join(2)
    assert not t.is_alive()


def _wait(pred, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_torch_threads_are_set_only_when_asked_and_changed(monkeypatch):
    import torch

    from defm_ros.node.pipeline import TorchThreads

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    threads = TorchThreads()
    for n in (0, 2, 2, 1, 0):
        threads.set(n)
    assert calls == [2, 1]  # 0 keeps torch's default; an unchanged count is not set again


def test_processor_downloads_features_in_the_output_dtype():
    proc, enc, _, published, _ = _processor(1)
    proc.process([_frame(0, np.full((4, 6), 1000), 1)], {**PARAMS, "output_dtype": "float16"})
    assert enc.dtypes == ["float16"] and len(published) == 1


def test_refine_stage_hands_the_refined_depth_on_where_it_lies():
    """The refined depth goes to the depth encoder as the refiner left it (a device tensor), never through host
    memory and back; its host copy and mask go to the refined-depth topics, frame by frame. Points are asked
    for only for the frames whose intrinsics the node gives (someone listens), with those intrinsics."""
    import torch

    from defm_ros.node.pipeline import RefineStage
    from defm_ros.refiner import Refined

    class Refiner:
        def refine_packed(self, rgbd, intrinsics=None):
            self.got, self.intrinsics = rgbd, intrinsics
            d = torch.from_numpy(rgbd[..., 3].copy())
            points = None if intrinsics is None else torch.from_numpy(intrinsics[:, None, :, :].repeat(4, 1))
            return Refined(d, d > 1.0, points)

    refiner, published = Refiner(), []
    k = np.arange(9, dtype=np.float32).reshape(3, 3)
    frames = [_frame(0, np.zeros((4, 6)), 1), _frame(1, np.zeros((4, 6)), 2)]
    stage = RefineStage(refiner, lambda f, depth, mask, points: published.append((f, depth, mask, points)),
                        intrinsics=lambda f: k if f is frames[1] else None)
    rgbd = np.stack([np.full((4, 6, 4), v, np.float32) for v in (0.5, 2.0)])
    out = stage(frames, rgbd)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4, 6)
    assert [f for f, *_ in published] == frames
    assert all(isinstance(d, np.ndarray) and isinstance(m, np.ndarray) for _, d, m, _ in published)
    assert published[0][2].sum() == 0 and published[1][2].all() and published[1][1][0, 0] == 2.0
    assert np.isnan(refiner.intrinsics[0]).all() and (refiner.intrinsics[1] == k).all()
    assert published[0][3] is None and published[1][3].shape == (4, 3, 3)
    np.testing.assert_array_equal(published[1][3][0], k)
    RefineStage(refiner, lambda *a: None)(frames, rgbd)  # nobody wants points: none asked for
    assert refiner.intrinsics is None
