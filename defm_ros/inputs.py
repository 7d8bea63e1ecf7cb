"""The node's input side, by modality: which topics a model needs, how their messages pair up into
one frame, and how a frame's messages become the model's input. No rclpy: message types are named,
and messages are anything shaped like the sensor_msgs ones.

The inference loop only ever sees Frames whose `msg` is {role: message} and calls Input.decode, so
a new modality (colour, aligned colour + depth + camera_info) is a new Input here, not a change there.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from .config import TRANSPORTS, check_choice
from .msgs.color import RAW_ENCODINGS as COLOR_ENCODINGS
from .msgs.color import decode_color
from .msgs.depth import RAW_ENCODINGS as DEPTH_ENCODINGS
from .msgs.depth import decode_depth
from .preprocess.rgbd import pack

IMAGE, COMPRESSED, CAMERA_INFO = "Image", "CompressedImage", "CameraInfo"  # sensor_msgs/msg types by name
T = TypeVar("T")


@dataclass(frozen=True)
class Topic:
    role: str  # what the message is to the model: "depth", "color", "camera_info"
    name: str  # fully resolved topic name
    msg_type: str  # IMAGE, COMPRESSED or CAMERA_INFO


def transport_topic(base: str, transport: str) -> str:
    """image_transport's naming: the raw topic, or its `<base>/<transport>` sub-topic."""
    return base if check_choice("transport", transport, TRANSPORTS) == "raw" else f"{base}/{transport}"


def camera_topic(topic: str) -> str:
    """The camera's image topic without image_transport's sub-topic: what features are named after, so
    that raw and compressed recordings of one camera give the same feature topics."""
    for transport in TRANSPORTS[1:]:
        if topic.endswith(f"/{transport}"):
            return topic[: -len(transport) - 1]
    return topic


def cdr_stamp(raw: bytes | memoryview) -> int:
    """header.stamp in ns of a serialized (CDR) message whose first field is a std_msgs/Header.

    Read without deserializing, so that a callback can pair frames by stamp at the cost of 8 bytes.
    """
    if len(raw) < 12:
        raise ValueError(f"a serialized message of {len(raw)} bytes has no header")
    order = "<" if raw[1] == 1 else ">"  # CDR encapsulation: 0x0001 little-endian, 0x0000 big-endian
    sec, nanosec = struct.unpack_from(f"{order}iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


class StampPairer:
    """Pairs the messages of several topics of one camera into frames by header stamp.

    `put(role, stamp_ns, msg)` returns {role: msg} once every role has a message within `tolerance_ns`
    of this one (0: exactly equal stamps), and forgets what is older. A message that can no longer
    pair (older than a completed frame, or pushed out of its role's short history) counts as
    `unpaired`. Cameras publish in stamp order, so the history only needs to bridge their jitter.
    """

    def __init__(self, roles: tuple[str, ...], tolerance_ns: int = 0, history: int = 4) -> None:
        if len(roles) < 2:
            raise ValueError("pairing needs at least two roles")
        self.roles, self.tolerance_ns = roles, tolerance_ns
        self._pending: dict[str, deque[tuple[int, Any]]] = {r: deque() for r in roles}
        self._history = history
        self.unpaired = 0
        self.paired = 0

    @property
    def waiting(self) -> int:
        """Messages held for a partner that has not come (yet): unpaired, once the input has ended."""
        return sum(len(q) for q in self._pending.values())

    def put(self, role: str, stamp_ns: int, msg: Any) -> dict[str, Any] | None:
        queue = self._pending[role]
        if len(queue) >= self._history:
            queue.popleft()
            self.unpaired += 1
        queue.append((stamp_ns, msg))
        match: dict[str, tuple[int, Any]] = {role: queue[-1]}
        for other in self.roles:
            if other == role:
                continue
            near = [e for e in self._pending[other] if abs(e[0] - stamp_ns) <= self.tolerance_ns]
            if not near:
                return None
            match[other] = min(near, key=lambda e: abs(e[0] - stamp_ns))
        for r, entry in match.items():  # drop the matched messages and everything older than them
            q = self._pending[r]
            while q:
                head = q.popleft()
                if head is entry:
                    break
                self.unpaired += 1
        self.paired += 1
        return {r: m for r, (_, m) in match.items()}


class ShapeBatches(Generic[T]):
    """Frames waiting for a forward pass, by the shape of their model input: frames of one size share a pass, and
    a camera that changed resolution gets its own. The node batches one take of its cameras' frames
    (group_by_shape), extraction a bag's stream, `size` frames at a time."""

    def __init__(self, size: int = 0) -> None:
        self.size = size  # add() hands a group back once it holds this many; 0: never (drain() does)
        self.queued = 0  # frames added and not handed back yet
        self._groups: dict[tuple[int, ...], list[T]] = {}

    def add(self, item: T, x: np.ndarray) -> list[T] | None:
        """Queue `item`, whose model input is `x`; the batch it fills, if it fills one."""
        shape = tuple(int(v) for v in x.shape)
        group = self._groups.setdefault(shape, [])
        group.append(item)
        self.queued += 1
        return self._take(shape) if self.size and len(group) >= self.size else None

    def drain(self) -> list[list[T]]:
        """Every group still waiting, in the order their first frames came."""
        return [self._take(shape) for shape in list(self._groups)]

    def _take(self, shape: tuple[int, ...]) -> list[T]:
        group = self._groups.pop(shape)
        self.queued -= len(group)
        return group


def group_by_shape(items: list[tuple[T, np.ndarray]]) -> list[list[tuple[T, np.ndarray]]]:
    """(frame, model input) pairs -> the groups that share a forward pass (ShapeBatches, all at once)."""
    batches: ShapeBatches[tuple[T, np.ndarray]] = ShapeBatches()
    for item in items:
        batches.add(item, item[1])
    return batches.drain()


class Input(ABC):
    """One camera's input for one modality. `topics[0]` is the primary: outputs carry its header, and
    the stream statistics count its frames. `gated`: its subscriptions may leave the executor's wait set
    during inference (one topic; several topics would lose their pairs to DDS's keep-last-1)."""

    modality: ClassVar[str]
    gated: ClassVar[bool] = True
    transports: ClassVar[tuple[str, ...]]  # the first is raw sensor_msgs/Image
    topics: tuple[Topic, ...]
    unpaired: int = 0  # messages that never found their partners (paired inputs)

    @abstractmethod
    def pair(self, role: str, msg: Any) -> dict[str, Any] | None:
        """A message of `role` arrived (serialized); the frame it completes, if any."""

    @abstractmethod
    def decode(self, msgs: Mapping[str, Any], params: Mapping[str, Any]) -> np.ndarray:
        """The (deserialized) messages of one frame -> the model's input for it; raises on bad data."""


class SingleTopicInput(Input):
    """One image topic, raw or through one image_transport plugin; a message is a frame."""

    role: ClassVar[str]

    def __init__(self, topic: str, transport: str = "raw") -> None:
        if check_choice("transport", transport, TRANSPORTS) not in self.transports:
            raise ValueError(f"transport {transport!r} does not carry {self.modality}; {self.modality} topics use "
                             + " or ".join(self.transports))
        msg_type = IMAGE if transport == "raw" else COMPRESSED
        self.topics = (Topic(self.role, transport_topic(topic, transport), msg_type),)

    def pair(self, role: str, msg: Any) -> dict[str, Any]:
        return {role: msg}

    def decode(self, msgs: Mapping[str, Any], params: Mapping[str, Any]) -> np.ndarray:
        return self.decode_one(msgs[self.role], params)

    @classmethod
    @abstractmethod
    def decode_one(cls, msg: Any, params: Mapping[str, Any]) -> np.ndarray:
        """One message -> the model's input (the node and offline extraction decode alike)."""

    @classmethod
    @abstractmethod
    def carries(cls, msg: Any) -> bool:
        """Whether a (deserialized) message is of this modality: how extraction finds its topics."""


class DepthInput(SingleTopicInput):
    """One depth topic: sensor_msgs/Image (16UC1, mono16, 32FC1), or compressedDepth (SPEC §4)."""

    modality = role = "depth"
    transports = ("raw", "compressedDepth")

    @classmethod
    def decode_one(cls, msg: Any, params: Mapping[str, Any]) -> np.ndarray:
        return decode_depth(msg, params["depth_scale"])

    @classmethod
    def carries(cls, msg: Any) -> bool:
        if hasattr(msg, "format"):
            return "compresseddepth" in str(msg.format).lower()
        return str(getattr(msg, "encoding", "")) in DEPTH_ENCODINGS


class ColorInput(SingleTopicInput):
    """One colour topic: sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8), or compressed (JPEG, PNG)."""

    modality = role = "color"
    transports = ("raw", "compressed")

    @classmethod
    def decode_one(cls, msg: Any, params: Mapping[str, Any]) -> np.ndarray:
        return decode_color(msg)

    @classmethod
    def carries(cls, msg: Any) -> bool:
        if hasattr(msg, "format"):
            fmt = str(msg.format).lower()
            return "compresseddepth" not in fmt and ("jpeg" in fmt or "png" in fmt)
        return str(getattr(msg, "encoding", "")) in COLOR_ENCODINGS


def decode_rgbd(depth: Any, color: Any, params: Mapping[str, Any], camera_info: Any = None) -> np.ndarray:
    """One camera's depth and colour messages -> the packed float32 (H, W, 4) RGB + depth (preprocess.rgbd.pack).

    The one RGB-D decode: the node's (with the frame's camera_info, whose size must agree too) and extraction's
    (a bag's depth + colour pair). Raises ValueError where they are not registered to each other."""
    depth_m = decode_depth(depth, params["depth_scale"])
    rgb = decode_color(color)
    sizes = {"depth": depth_m.shape, "colour": rgb.shape[:2]}
    if camera_info is not None:
        sizes["camera_info"] = (int(camera_info.height), int(camera_info.width))
    if len(set(sizes.values())) == 1:
        return pack(rgb, depth_m)
    if camera_info is None:  # each caller's wording, as its logs and reports have it
        raise ValueError(f"colour {rgb.shape[1]}x{rgb.shape[0]} and depth {depth_m.shape[1]}x{depth_m.shape[0]} are "
                         "not aligned: pair the depth registered to the colour image (aligned_depth_to_color)")
    raise ValueError("colour, depth and camera_info are not aligned ("
                     + ", ".join(f"{k} {w}x{h}" for k, (h, w) in sizes.items())
                     + "): use the depth registered to the colour image (aligned_depth_to_color)")


class RgbdInput(Input):
    """Aligned colour, depth and camera_info of one camera (LingBot-Depth), paired by header stamp, exactly or
    within `tolerance_ns`. A frame is the packed float32 (H, W, 4) RGB + depth (preprocess.rgbd.pack);
    colour and depth must be registered to each other (aligned_depth_to_color on a RealSense)."""

    modality = "rgbd"
    gated = False
    transports = ("raw",)

    def __init__(self, depth: str, color: str, camera_info: str, transport: str = "raw", tolerance_ns: int = 0) -> None:
        if transport not in self.transports:
            raise ValueError(f"aligned colour + depth are taken raw (sensor_msgs/Image), not {transport!r}")
        self.topics = (Topic("depth", depth, IMAGE), Topic("color", color, IMAGE),
                       Topic("camera_info", camera_info, CAMERA_INFO))
        self.pairer = StampPairer(tuple(t.role for t in self.topics), tolerance_ns)

    @property
    def unpaired(self) -> int:  # type: ignore[override]
        return self.pairer.unpaired

    def pair(self, role: str, msg: Any) -> dict[str, Any] | None:
        return self.pairer.put(role, cdr_stamp(msg), msg)

    def decode(self, msgs: Mapping[str, Any], params: Mapping[str, Any]) -> np.ndarray:
        return decode_rgbd(msgs["depth"], msgs["color"], params, msgs["camera_info"])


INPUTS: dict[str, type[Input]] = {k.modality: k for k in (DepthInput, ColorInput, RgbdInput)}
# modality -> the parameters naming its topics: (single camera, inside each camera namespace), in Input order
TOPIC_PARAMS = {"depth": [("depth_topic", "camera_depth_topic")], "color": [("image_topic", "camera_image_topic")],
                "rgbd": [("depth_topic", "camera_depth_topic"), ("image_topic", "camera_image_topic"),
                         ("camera_info_topic", "camera_info_rel_topic")]}


def camera_inputs(modality: str, params: Mapping[str, Any], resolve: Callable[[str], str]) -> list[tuple[str, Input]]:
    """(output namespace, Input) per camera from the node's parameters.

    One camera: `depth_topic` (default ~/depth), `image_topic` (~/image) and for RGB-D `camera_info_topic`,
    remappable, outputs under ~ (~/features/*). Several: `<ns>/<camera_depth_topic>` (and the colour and
    camera_info topics relative to it) per namespace in `cameras`, outputs under `<ns>`. Base topics
    are resolved (remapped) first: image_transport appends the transport after remapping.
    """
    kind, names = INPUTS[modality], TOPIC_PARAMS[modality]
    extra = {"tolerance_ns": int(params["pair_tolerance_ms"] * 1e6)} if kind is RgbdInput else {}
    cameras = [c for c in params["cameras"] if c]
    if not cameras:
        return [("~", kind(*(resolve(params[single]) for single, _ in names), params["transport"], **extra))]
    return [(c, kind(*(resolve(f"{c}/{params[rel]}") for _, rel in names), params["transport"], **extra))
            for c in cameras]
