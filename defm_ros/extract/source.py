"""Reading depth frames out of recorded bags, with no rclpy: rosbag2 (sqlite3 or mcap, a bag folder
or a bare .db3/.mcap file) and ROS 1 .bag files, through rosbags.

A bag whose recorder was killed is common on robots. An .mcap without its footer is read
sequentially up to the damage (`BagSource.salvaged` says so); a bag folder without metadata.yaml is
read from its storage files; anything else unreadable raises BagReadError with a recovery hint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..inputs import INPUTS, camera_topic

log = logging.getLogger("defm_ros")

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
PROBE_MESSAGES = 10  # messages looked at per image topic to tell its modality


class BagReadError(RuntimeError):
    """A bag that cannot be opened or read at all; the text says why and what to try."""


@dataclass
class TopicInfo:
    name: str
    msgtype: str
    count: int | None  # messages recorded on the topic, when the bag's index says


@dataclass
class RawMessage:
    topic: str
    msgtype: str
    log_time: int  # ns, the bag's receive time
    data: bytes | memoryview


BAG_SUFFIXES = (".mcap", ".db3", ".bag")


def check_bag_path(path: Path) -> None:
    """Raise BagReadError when `path` cannot be a recording at all (missing, or not a bag by its name),
    before anything slow is done with it; a damaged bag is found only when it is opened."""
    if not path.exists():
        raise BagReadError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix not in BAG_SUFFIXES:
        raise BagReadError(f"{path} is not a bag: extract reads rosbag2 folders and .mcap, .db3 or ROS 1 .bag files")
    if path.is_dir() and not ((path / "metadata.yaml").exists() or any(path.glob("*.mcap"))
                              or any(path.glob("*.db3"))):
        raise BagReadError(f"{path}: neither metadata.yaml nor .mcap/.db3 files; not a rosbag2 folder")


def _hint(path: Path) -> str:
    if path.suffix == ".bag":
        return "a ROS 1 bag must be indexed: run `rosbag reindex` on a copy"
    if path.suffix == ".db3" or (path.is_dir() and any(path.glob("*.db3"))):
        return "try `sqlite3 BAG.db3 .recover | sqlite3 fixed.db3` and `ros2 bag reindex`"
    return "try `mcap recover` or `ros2 bag reindex`"


def _default_typestore() -> Any:
    """Standard ROS 2 definitions, for rosbag2 files that carry none (sqlite3 before Iron)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


class BagSource:
    """One recording, opened for reading: `topics`, `messages(topics)`, `deserialize`, and timing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.salvaged = False  # True when read sequentially past an index that is missing
        self.notes: list[str] = []
        self._reader: Any = None
        self._salvage: _McapSalvage | None = None
        check_bag_path(self.path)
        self._open()

    def _storage_paths(self) -> list[Path]:
        p = self.path
        if p.is_dir() and not (p / "metadata.yaml").exists():
            files = sorted(p.glob("*.mcap")) or sorted(p.glob("*.db3"))
            self.notes.append(f"{p} has no metadata.yaml (recording not closed?): reading its "
                              f"{len(files)} storage file(s) directly")
            return files
        return [p]

    def _open(self) -> None:
        from rosbags.highlevel import AnyReader

        paths = self._storage_paths()
        try:
            reader = AnyReader(paths, default_typestore=_default_typestore())
            reader.open()
        except Exception as exc:  # rosbags raises its own error types, sqlite3 and OS errors
            mcaps = [p for p in paths if p.suffix == ".mcap"] or (
                sorted(self.path.glob("*.mcap")) if self.path.is_dir() else [])
            if mcaps and len(mcaps) == 1:
                self._salvage = _McapSalvage(mcaps[0])
                self.salvaged = True
                self.notes.append(f"{mcaps[0]} is damaged or truncated ({exc}); reading it sequentially "
                                  f"up to the damage")
                return
            raise BagReadError(f"{self.path}: cannot open ({exc}); {_hint(self.path)}") from exc
        self._reader = reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> BagSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def topics(self) -> list[TopicInfo]:
        if self._salvage is not None:
            return self._salvage.topics()
        seen: dict[str, TopicInfo] = {}
        for c in self._reader.connections:
            info = seen.setdefault(c.topic, TopicInfo(c.topic, c.msgtype, 0))
            info.count = None if info.count is None or c.msgcount is None else info.count + c.msgcount
        return list(seen.values())

    @property
    def time_range(self) -> tuple[int, int] | None:
        """(first, last) log time in ns, or None when unknown (salvaged files before reading)."""
        if self._salvage is not None:
            return self._salvage.time_range
        if not self._reader.message_count:
            return None
        return self._reader.start_time, self._reader.end_time

    def messages(self, topics: list[str] | None = None) -> Iterator[RawMessage]:
        """Messages in the bag's order. A read error part-way ends the stream with BagReadError."""
        if self._salvage is not None:
            yield from self._salvage.messages(topics)
            return
        conns = [c for c in self._reader.connections if topics is None or c.topic in topics]
        if not conns:
            return
        try:
            for conn, t, data in self._reader.messages(connections=conns):
                yield RawMessage(conn.topic, conn.msgtype, t, data)
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            raise BagReadError(f"{self.path}: unreadable part-way ({exc}); {_hint(self.path)}") from exc

    def deserialize(self, msg: RawMessage) -> Any:
        if self._salvage is not None:
            return self._salvage.deserialize(msg)
        return self._reader.deserialize(msg.data, msg.msgtype)


class _McapSalvage:
    """Sequential reading of an .mcap whose summary/footer is missing (recorder killed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.typestore = _default_typestore()
        self._topics: dict[str, TopicInfo] | None = None
        self.time_range: tuple[int, int] | None = None

    def _records(self) -> Iterator[Any]:
        from mcap.stream_reader import StreamReader

        with self.path.open("rb") as f:
            reader = StreamReader(f, skip_magic=False, emit_chunks=False, record_size_limit=2**31)
            try:
                yield from reader.records
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except Exception as exc:  # EndOfFile, struct errors, bad chunk: the damage starts here
                log.warning("%s: stopped reading at the damage: %s", self.path, str(exc) or type(exc).__name__)

    def topics(self) -> list[TopicInfo]:
        if self._topics is None:
            from mcap.records import Channel, Message, Schema

            schemas: dict[int, str] = {}
            channels: dict[int, TopicInfo] = {}
            first = last = None
            for rec in self._records():
                if isinstance(rec, Schema):
                    schemas[rec.id] = rec.name
                elif isinstance(rec, Channel):
                    channels[rec.id] = TopicInfo(rec.topic, schemas.get(rec.schema_id, ""), 0)
                elif isinstance(rec, Message) and rec.channel_id in channels:
                    channels[rec.channel_id].count += 1
                    first = rec.log_time if first is None else min(first, rec.log_time)
                    last = rec.log_time if last is None else max(last, rec.log_time)
            self._topics = {c.name: c for c in channels.values()}
            self.time_range = None if first is None else (first, last)
        return list(self._topics.values())

    def messages(self, topics: list[str] | None) -> Iterator[RawMessage]:
        from mcap.records import Channel, Message, Schema

        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}
        for rec in self._records():
            if isinstance(rec, Schema):
                schemas[rec.id] = rec.name
            elif isinstance(rec, Channel):
                channels[rec.id] = (rec.topic, schemas.get(rec.schema_id, ""))
            elif isinstance(rec, Message) and rec.channel_id in channels:
                topic, msgtype = channels[rec.channel_id]
                if topics is None or topic in topics:
                    yield RawMessage(topic, msgtype, rec.log_time, rec.data)

    def deserialize(self, msg: RawMessage) -> Any:
        return self.typestore.deserialize_cdr(msg.data, msg.msgtype)


def find_topics(source: BagSource, modality: str = "depth", among: list[TopicInfo] | None = None) -> list[TopicInfo]:
    """Every Image / CompressedImage topic (of `among`, default all) that carries `modality` (inputs.py:
    depth is 16UC1, mono16, 32FC1 or compressedDepth; colour is rgb8, bgr8, rgba8, bgra8 or JPEG/PNG),
    judged by its first few messages (a malformed one does not hide it)."""
    carries = INPUTS[modality].carries
    candidates = [t for t in (source.topics if among is None else among) if t.msgtype in (IMAGE, COMPRESSED)]
    found: list[TopicInfo] = []
    for topic in candidates:
        seen = 0
        for raw in source.messages([topic.name]):
            seen += 1
            try:
                if carries(source.deserialize(raw)):
                    found.append(topic)
                    break
            except Exception:  # noqa: BLE001 - a malformed message says nothing about the topic
                pass
            if seen >= PROBE_MESSAGES:
                break
    return sorted(found, key=lambda t: t.name)


def pair_topics(depth: list[TopicInfo], color: list[TopicInfo]) -> tuple[list[tuple[TopicInfo, TopicInfo]], list[str]]:
    """Each depth topic with the colour topic of the same camera: the one sharing the longest namespace
    prefix (at least the first level, e.g. /camera/camera/aligned_depth_to_color/image_raw with
    /camera/camera/color/image_raw). Returns (pairs, notes about depth topics left without colour)."""
    pairs, notes = [], []
    for d in depth:
        dparts = d.name.strip("/").split("/")

        def shared(c: TopicInfo, dparts: list[str] = dparts) -> int:
            n = 0
            for a, b in zip(dparts, c.name.strip("/").split("/"), strict=False):
                if a != b:
                    break
                n += 1
            return n

        ranked = sorted(color, key=shared, reverse=True)
        best = [c for c in ranked if shared(c) == shared(ranked[0])] if ranked else []
        if not best or shared(best[0]) == 0:
            notes.append(f"{d.name}: no colour topic of the same camera to pair it with; left out")
        elif len(best) > 1:
            notes.append(f"{d.name}: several colour topics fit equally ({', '.join(c.name for c in best)}); "
                         "left out (name the pair with --topic DEPTH --topic COLOUR)")
        else:
            pairs.append((d, best[0]))
    return pairs, notes


def camera_info_topic(source: BagSource, color: str, depth: str) -> str | None:
    """The camera_info of a depth + colour pair, by image_transport's naming (a sibling `camera_info` of the image
    topic): the colour's (the aligned depth is registered to the colour camera), else the aligned depth's; None
    when the bag has neither."""
    infos = {t.name for t in source.topics if t.msgtype == CAMERA_INFO}
    for image in (color, depth):
        sibling = camera_topic(image).rpartition("/")[0] + "/camera_info"
        if sibling in infos:
            return sibling
    return None
