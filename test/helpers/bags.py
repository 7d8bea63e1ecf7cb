"""Recordings as robots leave them (ROS 1 .bag, rosbag2 in sqlite3 or MCAP), written with rosbags, each writer
returning the frames it holds; and feature bags read back as any tool reads them. For the extraction, fleet
and replay tests: one recording of every depth transport, colour, aligned RGB-D and two-camera bags."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np

N = 6  # frames per depth topic in write_bag's recording
DEPTH_TOPICS = ["/cam/depth", "/cam2/depth/compressedDepth", "/zed/depth"]
# features are named after the camera, not the transport (as the node names them): /cam2/depth/features/*
CAMERAS = {"/cam/depth": "/cam/depth", "/cam2/depth/compressedDepth": "/cam2/depth", "/zed/depth": "/zed/depth"}
RS_DEPTH, RS_COLOR = "/camera/camera/aligned_depth_to_color/image_raw", "/camera/camera/color/image_raw"
RS_INFO = "/camera/camera/color/camera_info"
IMAGE, COMPRESSED = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
T0 = 1_700_000_000 * 10**9  # the recordings start here (ns)


def header(ts: Any, stamp: int, frame_id: str) -> Any:
    """A std_msgs/Header of the typestore `ts`, stamped `stamp` ns (ROS 1's carries a seq)."""
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    time = Time(sec=stamp // 10**9, nanosec=stamp % 10**9)
    if "seq" in Header.__dataclass_fields__:
        return Header(seq=0, stamp=time, frame_id=frame_id)
    return Header(stamp=time, frame_id=frame_id)


def image(ts: Any, stamp: int, frame_id: str, encoding: str, arr: np.ndarray) -> Any:
    """A sensor_msgs/Image of `ts` holding `arr` (H, W) or (H, W, C) in unpadded rows."""
    Image = ts.types[IMAGE]
    return Image(header=header(ts, stamp, frame_id), height=arr.shape[0], width=arr.shape[1], encoding=encoding,
                 is_bigendian=0, step=arr.shape[1] * arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1),
                 data=np.frombuffer(np.ascontiguousarray(arr).tobytes(), np.uint8))


def compressed(ts: Any, stamp: int, frame_id: str, fmt: str, data: bytes) -> Any:
    """A sensor_msgs/CompressedImage of `ts`: `data` in the `fmt` an encoder of defm_ros.msgs gave."""
    return ts.types[COMPRESSED](header=header(ts, stamp, frame_id), format=fmt, data=np.frombuffer(data, np.uint8))


class BagWriter:
    """One bag being written: `kind` ros1 (.bag), sqlite3 or mcap (rosbag2), its typestore (`ts`, Noetic's or
    Humble's), and messages serialized as that format stores them. Topics are added in the order given."""

    def __init__(self, path: Path, kind: str = "mcap") -> None:
        from rosbags.typesys import Stores, get_typestore

        self.ros1 = kind == "ros1"
        self.ts = get_typestore(Stores.ROS1_NOETIC if self.ros1 else Stores.ROS2_HUMBLE)
        if self.ros1:
            from rosbags.rosbag1 import Writer as Writer1

            self.writer = Writer1(path)
        else:
            from rosbags.rosbag2 import StoragePlugin, Writer

            plugin = StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3
            self.writer = Writer(path, version=8, storage_plugin=plugin)
        self.writer.open()
        self.conns: dict[str, Any] = {}

    def add(self, topic: str, msgtype: str) -> None:
        self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.ts)

    def write(self, topic: str, log_time: int, msg: Any) -> None:
        serialize = self.ts.serialize_ros1 if self.ros1 else self.ts.serialize_cdr
        self.write_raw(topic, log_time, serialize(msg, msg.__msgtype__))

    def write_raw(self, topic: str, log_time: int, data: bytes) -> None:
        """Bytes as they are: an undecodable message."""
        self.writer.write(self.conns[topic], log_time, data)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.close()


def write_bag(path: Path, kind: str, pngs: list[np.ndarray], count: int = N) -> dict:
    """A small recording: 16UC1 640x480, 32FC1 320x240 (with NaN), compressedDepth 16UC1, an rgb8
    topic that is not depth, one depth image with a wrong size and one undecodable message.
    Returns {topic: [(log_time, stamp_ns, frame_id, depth_m)]} for the valid depth frames."""
    from defm_ros.msgs.depth import encode_compressed

    expected: dict[str, list] = {CAMERAS[t]: [] for t in DEPTH_TOPICS}
    with BagWriter(path, kind) as bag:
        ts = bag.ts
        for t in [*DEPTH_TOPICS, "/cam/color"]:
            bag.add(t, COMPRESSED if "compressed" in t else IMAGE)
        for i in range(count):
            raw = pngs[i % len(pngs)]
            log_time = T0 + i * 33_333_333
            stamp = log_time - 5_000_000  # capture time, earlier than the bag's receive time
            bag.write("/cam/depth", log_time, image(ts, stamp, "cam_depth", "16UC1", raw))
            expected["/cam/depth"].append((log_time, stamp, "cam_depth", raw.astype(np.float32) * np.float32(0.001)))
            msg = compressed(ts, stamp, "cam_depth", *encode_compressed(raw))
            bag.write("/cam2/depth/compressedDepth", log_time + 1, msg)
            expected["/cam2/depth"].append((log_time + 1, stamp, "cam_depth",
                                            raw.astype(np.float32) * np.float32(0.001)))
            zed = (raw[::2, ::2].astype(np.float32) * np.float32(0.001))
            zed[zed == 0] = np.nan
            bag.write("/zed/depth", log_time + 2, image(ts, stamp + 7, "zed", "32FC1", zed))
            expected["/zed/depth"].append((log_time + 2, stamp + 7, "zed", zed))
            rgb = np.full((4, 4, 3), i, np.uint8)
            bag.write("/cam/color", log_time + 3, image(ts, stamp, "cam_color", "rgb8", rgb))
        bad = image(ts, stamp + 1, "cam_depth", "16UC1", pngs[0])
        bad.data = bad.data[:100]  # height/step promise 614400 bytes
        bag.write("/cam/depth", log_time + 10, bad)
        bag.write_raw("/zed/depth", log_time + 11, b"\x00\x01\x00\x00garbage")
    return expected


def write_colour_bag(path: Path, rgbs: list[np.ndarray]) -> dict:
    """rgb8 on /cam/color/image_raw, JPEG on /cam2/color/image_raw/compressed, and depth beside them.
    Returns {camera: [(log_time, rgb as decoded)]}."""
    from defm_ros.msgs.color import decode_color
    from defm_ros.msgs.color import encode_compressed as encode_color

    expected: dict[str, list] = {"/cam/color/image_raw": [], "/cam2/color/image_raw": []}
    with BagWriter(path) as bag:
        ts = bag.ts
        for topic, msgtype in (("/cam/color/image_raw", IMAGE), ("/cam2/color/image_raw/compressed", COMPRESSED),
                               ("/cam/depth", IMAGE)):
            bag.add(topic, msgtype)
        for i in range(4):
            rgb, t = rgbs[i % len(rgbs)], T0 + i * 10**8
            bag.write("/cam/color/image_raw", t, image(ts, t, "cam_color", "rgb8", rgb))
            expected["/cam/color/image_raw"].append((t, rgb))
            fmt, data = encode_color(rgb, "jpeg")
            bag.write("/cam2/color/image_raw/compressed", t + 1, compressed(ts, t, "cam_color", fmt, data))
            expected["/cam2/color/image_raw"].append((t + 1, decode_color(types.SimpleNamespace(format=fmt,
                                                                                                 data=data))))
            bag.write("/cam/depth", t + 2, image(ts, t, "cam_color", "16UC1", np.full((48, 64), 1000, np.uint16)))
    return expected


def camera_info(ts: Any, stamp: int, frame_id: str, k: np.ndarray, height: int, width: int) -> Any:
    """A sensor_msgs/CameraInfo of `ts` with the 3x3 camera matrix `k` for a height x width image."""
    return ts.types[CAMERA_INFO](header=header(ts, stamp, frame_id), height=height, width=width,
                                 distortion_model="plumb_bob", d=np.zeros(5), k=np.asarray(k, float).reshape(-1),
                                 r=np.eye(3).reshape(-1), p=np.zeros(12), binning_x=0, binning_y=0,
                                 roi=ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0,
                                                                                   width=0, do_rectify=False))


def write_rgbd_bag(path: Path, scenes: list[tuple[np.ndarray, np.ndarray]], ks: list[np.ndarray] | None = None) -> list:
    """Aligned RealSense topics: each scene's depth and colour with one stamp (with `ks`, the colour's camera_info
    too, its camera matrix ks[scene], on RS_INFO); then a depth frame whose colour never comes (unpaired) and a
    pair whose colour has half the depth's size (misaligned). Returns [(log_time, stamp, rgb, depth_m)] of the
    good pairs."""
    expected = []
    with BagWriter(path) as bag:
        ts = bag.ts
        bag.add(RS_DEPTH, IMAGE)
        bag.add(RS_COLOR, IMAGE)
        if ks is not None:
            bag.add(RS_INFO, CAMERA_INFO)

        def color(log_time: int, stamp: int, rgb: np.ndarray, k: int) -> None:
            bag.write(RS_COLOR, log_time, image(ts, stamp, "cam", "rgb8", rgb))
            if ks is not None:
                bag.write(RS_INFO, log_time + 1, camera_info(ts, stamp, "cam", ks[k], *rgb.shape[:2]))

        for k, (rgb, mm) in enumerate(scenes):
            stamp = T0 + k * 10**8
            bag.write(RS_DEPTH, stamp + 5, image(ts, stamp, "cam", "16UC1", mm))
            color(stamp + 9, stamp, rgb, k)  # colour arrives after its depth
            expected.append((stamp + 5, stamp, rgb, mm.astype(np.float32) / 1000))
        rgb, mm = scenes[0]
        bag.write(RS_DEPTH, T0 + 10**9, image(ts, T0 + 10**9, "cam", "16UC1", mm))  # no colour with this stamp
        bag.write(RS_DEPTH, T0 + 2 * 10**9, image(ts, T0 + 2 * 10**9, "cam", "16UC1", mm))
        color(T0 + 2 * 10**9 + 1, T0 + 2 * 10**9, rgb[::2, ::2].copy(), 0)
    return expected


def write_stereo_bag(path: Path, pngs: list[np.ndarray], cameras: tuple[str, ...]) -> Path:
    """A 16UC1 depth camera per name in `cameras` (<camera>/depth), N frames each at 30 Hz, each camera 2 ms
    after the one before, frame ids cam0, cam1, ..."""
    with BagWriter(path) as bag:
        for c in cameras:
            bag.add(f"{c}/depth", IMAGE)
        for i in range(N):
            for k, c in enumerate(cameras):
                t = T0 + i * 33_333_333 + k * 2_000_000
                bag.write(f"{c}/depth", t, image(bag.ts, t, f"cam{k}", "16UC1", pngs[(i + k) % len(pngs)]))
    return path


def read_features(bag_dir: Path) -> dict[str, list]:
    """{output topic: [(log_time, msg)]} of a feature bag, read with rosbags (as any tool would)."""
    from rosbags.highlevel import AnyReader

    out: dict[str, list] = {}
    with AnyReader([bag_dir]) as reader:
        for conn, t, data in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(data, conn.msgtype)))
    return out


JOINT_STATES, CMD_VEL = "/joint_states", "/cmd_vel"
JOINTS = ("shoulder", "elbow", "wrist")


def _robot_events(ts: Any, seconds: float, seed: int, names: tuple[str, ...]) -> tuple[list, dict]:
    """JointState at 100 Hz (header stamps, from 30 ms after the first frame) and Twist at 50 Hz (no header: the
    log time counts, from 55 ms), each message's values its own. Returns ([(log_time, topic, msg)], expected)."""
    rng = np.random.default_rng(seed)
    Vector3, Twist = ts.types["geometry_msgs/msg/Vector3"], ts.types["geometry_msgs/msg/Twist"]
    events, joints, twists = [], [], []
    for i in range(int(seconds * 100)):
        stamp = T0 + 30_000_000 + i * 10_000_000
        pos = rng.normal(size=len(names))
        events.append((stamp + 1_000_000, JOINT_STATES, ts.types["sensor_msgs/msg/JointState"](
            header=header(ts, stamp, "base"), name=list(names), position=pos, velocity=np.zeros(0),
            effort=np.zeros(0))))
        joints.append((stamp, pos.astype(np.float32)))
    for i in range(int(seconds * 50)):
        log_time = T0 + 55_000_000 + i * 20_000_000
        v = rng.normal(size=6)
        events.append((log_time, CMD_VEL, Twist(linear=Vector3(x=v[0], y=v[1], z=v[2]),
                                                angular=Vector3(x=v[3], y=v[4], z=v[5]))))
        twists.append((log_time, v.astype(np.float32)))
    return events, {JOINT_STATES: joints, CMD_VEL: twists}


def write_robot_bag(path: Path, cameras: dict[str, tuple[str, list[np.ndarray]]], seconds: float = 2.0,
                    seed: int = 0, robot: bool = True, joints: tuple[str, ...] = JOINTS) -> dict:
    """A robot's recording: each camera topic (-> (encoding, images cycled)) at about 10 Hz, frame k stamped
    T0 + k * 100 ms + up to 15 ms of jitter (the first exactly T0), every camera of a frame with the same stamp
    (aligned RGB-D), logged 4 ms after; with `robot` also JointState (100 Hz) and Twist (50 Hz), see _robot_events.
    Returns {topic: [(stamp or log time, values)]}: the images as written, the joints' positions, the twists."""
    rng = np.random.default_rng(seed + 1)
    with BagWriter(path) as bag:
        ts = bag.ts
        events, expected = _robot_events(ts, seconds, seed, joints) if robot else ([], {})
        for topic in cameras:
            expected[topic] = []
        for k in range(int(seconds * 10)):
            stamp = T0 + k * 100_000_000 + (int(rng.integers(-15, 16)) * 1_000_000 if k else 0)
            for topic, (encoding, images) in cameras.items():
                arr = images[k % len(images)]
                events.append((stamp + 4_000_000, topic, image(ts, stamp, "cam", encoding, arr)))
                expected[topic].append((stamp, arr))
        for topic, msgtype in [*((t, IMAGE) for t in cameras), *((JOINT_STATES, "sensor_msgs/msg/JointState"),
                                                                 (CMD_VEL, "geometry_msgs/msg/Twist"))[: 2 * robot]]:
            bag.add(topic, msgtype)
        for log_time, topic, msg in sorted(events, key=lambda e: e[0]):
            bag.write(topic, log_time, msg)
    return expected
