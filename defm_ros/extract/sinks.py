"""Where extracted features go: a rosbag2 (mcap) feature bag and a chunked dataset for training.

Both are readable at every moment, whatever stops the job, and both know which frames they hold, so
a resumed job asks them instead of trusting a separate state file.

Feature bag: a rosbag2 folder written in segments (a split bag). Each segment is written into
`.partial/` by rosbags, closed, moved into the bag and then listed in metadata.yaml, which is
replaced atomically. Ctrl-C closes the open segment; a killed process (SIGKILL, power loss) loses
only the open segment, which the next run discards. A segment closed but not yet listed is listed
by the next run.

Dataset: a folder of `chunk_NNNNNN.npz` files, each written to a temporary name and renamed, plus
`dataset.json` (stream info, topic names, completeness). Any prefix of chunks is a valid dataset.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np

from ..config import BAG_COMPRESSIONS, DEFAULT_COMPRESSION, DEFAULT_DTYPE, check_choice
from ..features import REFINED_INFO, REFINED_POINTS, encoding_for, restamped, to_hwc_bytes
from ..msgs.points import points_msg
from .guards import write_atomic

Key = tuple[str, int, int]  # input topic, log time (ns), header stamp (ns): one input frame
META = "rosbag2_bagfile_information"
BAG_VERSION = 8  # the newest rosbag2 metadata version that Humble's QoS parsing still understands
CUSTOM = "defm_ros."


class OutputMismatchError(ValueError):
    """An existing output was made with different settings; resuming would mix features."""


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _yaml() -> Any:
    from ruamel.yaml import YAML  # a rosbags dependency

    y = YAML(typ="safe")
    y.default_flow_style = False
    return y


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf8")))


def check_fingerprint(kind: str, path: Path, have: dict[str, Any] | None, want: dict[str, Any]) -> None:
    if have is None:
        return
    diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in sorted(diff.items()))
        raise OutputMismatchError(f"{kind} {path} was made with other settings ({detail}); "
                                  f"use the same settings, --overwrite, or another --out")


def _qos(transient_local: bool) -> list[Any]:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return [Qos(QosHistory.KEEP_LAST, 1 if transient_local else 2, QosReliability.RELIABLE,
                QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
                zero, zero, QosLiveliness.AUTOMATIC, zero, False)]


def merge_metadata(main: dict[str, Any] | None, seg: dict[str, Any]) -> dict[str, Any]:
    """metadata.yaml of a split bag = the bag so far + one more closed segment."""
    if main is None:
        return seg
    m, s = main[META], seg[META]
    end = max(m["starting_time"]["nanoseconds_since_epoch"] + m["duration"]["nanoseconds"],
              s["starting_time"]["nanoseconds_since_epoch"] + s["duration"]["nanoseconds"])
    start = min(m["starting_time"]["nanoseconds_since_epoch"], s["starting_time"]["nanoseconds_since_epoch"])
    m["starting_time"]["nanoseconds_since_epoch"], m["duration"]["nanoseconds"] = start, end - start
    m["relative_file_paths"] = m["relative_file_paths"] + s["relative_file_paths"]
    m["files"] = m["files"] + s["files"]
    m["message_count"] += s["message_count"]
    topics = {(t["topic_metadata"]["name"], t["topic_metadata"]["type"]): t for t in m["topics_with_message_count"]}
    for t in s["topics_with_message_count"]:
        key = (t["topic_metadata"]["name"], t["topic_metadata"]["type"])
        if key in topics:
            topics[key]["message_count"] += t["message_count"]
        else:
            m["topics_with_message_count"].append(t)
            topics[key] = t
    m["custom_data"] = {**(m.get("custom_data") or {}), **(s.get("custom_data") or {})}
    return main


class FeatureBag:
    """The §5 feature topics per input topic, at the input's log times, in a rosbag2 mcap folder."""

    def __init__(self, path: Path, info: dict[str, Any], fingerprint: dict[str, Any], source: str,
                 dtype: str = DEFAULT_DTYPE, segment_frames: int = 1000,
                 compression: str = DEFAULT_COMPRESSION) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.path, self.info, self.fingerprint, self.source = Path(path), info, fingerprint, source
        self.dtype = np.dtype(dtype)
        self.segment_frames = segment_frames
        self.compression = check_choice("compression", compression, BAG_COMPRESSIONS)
        self.ts = get_typestore(Stores.ROS2_JAZZY)
        self.notes: list[str] = []
        self.written = 0  # frames written by this run
        self._writer: Any = None
        self._conns: dict[str, Any] = {}
        self._seg_frames = 0
        self._has_info: set[str] = set()

    # -- opening and resuming --------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return (self.path / "metadata.yaml").exists() or (self.path / ".partial").exists()

    def _metadata(self) -> dict[str, Any] | None:
        meta = self.path / "metadata.yaml"
        return _yaml().load(meta.read_text(encoding="utf8")) if meta.exists() else None

    def open(self, resume: bool) -> set[Key]:
        """Prepare the folder; returns the frames it already holds (empty unless resuming)."""
        if not resume:
            if self.exists:
                raise FileExistsError(f"{self.path} exists; pass --resume to continue it or --overwrite")
            return set()
        self._recover()
        meta = self._metadata()
        if meta is None:
            return set()
        custom = meta[META].get("custom_data") or {}
        have = json.loads(custom[CUSTOM + "fingerprint"]) if CUSTOM + "fingerprint" in custom else None
        check_fingerprint("feature bag", self.path, have, self.fingerprint)
        return self._read_keys(meta)

    def _recover(self) -> None:
        """Finish segments that were closed but not listed; discard ones a killed run left open."""
        partial = self.path / ".partial"
        if not partial.is_dir():
            return
        for seg in sorted(partial.iterdir()):
            mcap = seg / f"{seg.name}.mcap"
            if (seg / "metadata.yaml").exists():
                if mcap.exists():
                    os.replace(mcap, self.path / mcap.name)
                self._list_segment(seg)
                self.notes.append(f"listed segment {seg.name} that an earlier run closed but did not list")
            else:
                self.notes.append(f"discarded segment {seg.name} that an earlier run left unfinished (killed?)")
            shutil.rmtree(seg)
        shutil.rmtree(partial, ignore_errors=True)

    def _read_keys(self, meta: dict[str, Any]) -> set[Key]:
        from rosbags.highlevel import AnyReader

        keys: set[Key] = set()
        for t in meta[META]["topics_with_message_count"]:
            name = t["topic_metadata"]["name"]
            if name.endswith("/features/info") and t["message_count"]:
                self._has_info.add(name[: -len("/features/info")])
        with AnyReader([self.path]) as reader:
            conns = [c for c in reader.connections if c.topic.endswith("/features/cls")]
            for conn, log_time, data in reader.messages(connections=conns):
                msg = reader.deserialize(data, conn.msgtype)
                keys.add((conn.topic[: -len("/features/cls")], log_time, stamp_ns(msg.header)))
        return keys

    # -- writing ---------------------------------------------------------------------------------

    def _segment_name(self) -> str:
        used = {p.stem for p in self.path.glob("*.mcap")}
        k = 0
        while f"{self.path.name}_{k}" in used:
            k += 1
        return f"{self.path.name}_{k}"

    def _start_segment(self) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path.mkdir(parents=True, exist_ok=True)
        seg = self.path / ".partial" / self._segment_name()
        seg.parent.mkdir(exist_ok=True)
        self._writer = Writer(seg, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        if self.compression == "zstd":  # "storage" compression: mcap's own zstd chunks
            from rosbags.rosbag2 import CompressionFormat, CompressionMode

            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()
        self._conns, self._seg_frames = {}, 0

    def _conn(self, topic: str, msgtype: str, latched: bool = False) -> Any:
        if topic not in self._conns:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.ts,
                                                             offered_qos_profiles=_qos(latched))
        return self._conns[topic]

    def _image(self, array: np.ndarray, header: Any) -> bytes:
        hwc, channels = to_hwc_bytes(array, "chw", self.dtype)  # the layout of features.to_msg
        Image = self.ts.types["sensor_msgs/msg/Image"]
        msg = Image(header=header, height=hwc.shape[0], width=hwc.shape[1],
                    encoding=encoding_for(channels, self.dtype), is_bigendian=0,
                    step=hwc.shape[1] * channels * hwc.itemsize, data=hwc.reshape(-1).view(np.uint8))
        return self.ts.serialize_cdr(msg, Image.__msgtype__)

    def _plain(self, arr: np.ndarray, encoding: str, header: Any) -> bytes:
        Image = self.ts.types["sensor_msgs/msg/Image"]
        arr = np.ascontiguousarray(arr)
        msg = Image(header=header, height=arr.shape[0], width=arr.shape[1], encoding=encoding, is_bigendian=0,
                    step=arr.shape[1] * arr.itemsize, data=arr.reshape(-1).view(np.uint8))
        return self.ts.serialize_cdr(msg, Image.__msgtype__)

    def header(self, stamp: int, frame_id: str) -> Any:
        Header, Time = self.ts.types["std_msgs/msg/Header"], self.ts.types["builtin_interfaces/msg/Time"]
        return Header(stamp=Time(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000), frame_id=frame_id)

    def write(self, topic: str, log_time: int, header: Any, cls: np.ndarray, dense: np.ndarray,
              refined: tuple[np.ndarray, np.ndarray] | None = None, *, camera_info: Any = None,
              points: np.ndarray | None = None) -> None:
        """One frame: cls (C,) and dense (C, h, w), stamped with the input header at its log time; with
        `refined` (depth (H, W) metres NaN invalid, mask (H, W) bool) also <topic>/depth_refined (32FC1) and
        <topic>/depth_refined_mask (mono8), as the node publishes them, and with them `camera_info` (restamped)
        and `points` ((H, W, 3), a PointCloud2) on <topic>/depth_refined/camera_info and /points."""
        if self._writer is None:
            self._start_segment()
        if topic not in self._has_info:
            String = self.ts.types["std_msgs/msg/String"]
            data = self.ts.serialize_cdr(String(data=json.dumps(self.info, sort_keys=True)), String.__msgtype__)
            self._writer.write(self._conn(f"{topic}/features/info", String.__msgtype__, latched=True), log_time, data)
            self._has_info.add(topic)
        image = "sensor_msgs/msg/Image"
        self._writer.write(self._conn(f"{topic}/features/dense", image), log_time, self._image(dense, header))
        self._writer.write(self._conn(f"{topic}/features/cls", image), log_time, self._image(cls, header))
        if refined is not None:
            for suffix, (encoding, arr) in (("depth_refined", ("32FC1", refined[0].astype("<f4"))),
                                            ("depth_refined_mask", ("mono8", np.where(refined[1], 255, 0)
                                                                    .astype(np.uint8)))):
                self._writer.write(self._conn(f"{topic}/{suffix}", image), log_time, self._plain(arr, encoding, header))
            self._refined_extras(topic, log_time, header, camera_info, points)
        self.written += 1
        self._seg_frames += 1
        if self._seg_frames >= self.segment_frames:
            self.commit(complete=False)

    def _refined_extras(self, topic: str, log_time: int, header: Any, camera_info: Any, points: Any) -> None:
        """The refined depth's camera_info and points, where given (features.REFINED_INFO, REFINED_POINTS)."""
        out = []
        if camera_info is not None:
            out.append((REFINED_INFO, "sensor_msgs/msg/CameraInfo", restamped(camera_info, header)))
        if points is not None:
            cloud, field = self.ts.types["sensor_msgs/msg/PointCloud2"], self.ts.types["sensor_msgs/msg/PointField"]
            out.append((REFINED_POINTS, cloud.__msgtype__, points_msg(header, points, cloud, field)))
        for suffix, msgtype, msg in out:
            self._writer.write(self._conn(f"{topic}/{suffix}", msgtype), log_time, self.ts.serialize_cdr(msg, msgtype))

    def _custom(self, complete: bool, extra: dict[str, Any]) -> dict[str, str]:
        return {CUSTOM + "complete": json.dumps(complete), CUSTOM + "source": self.source,
                CUSTOM + "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
                **{CUSTOM + k: json.dumps(v) for k, v in extra.items()}}

    def commit(self, complete: bool, extra: dict[str, Any] | None = None) -> None:
        """Close the open segment (if any) and list it; then record the completeness flag."""
        writer, self._writer = self._writer, None
        custom = self._custom(complete, extra or {})
        if writer is not None:
            for k, v in custom.items():
                writer.set_custom_data(k, v)
            writer.close()
            seg = Path(writer.path)
            os.replace(seg / f"{seg.name}.mcap", self.path / f"{seg.name}.mcap")
            self._list_segment(seg)
            shutil.rmtree(seg)
            with contextlib.suppress(OSError):
                seg.parent.rmdir()  # .partial/, once empty
        meta = self._metadata()
        if meta is not None:
            meta[META]["custom_data"] = {**(meta[META].get("custom_data") or {}), **custom}
            self._save(meta)

    def abort(self) -> None:
        """Drop the open segment (used when closing it is impossible)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()
            shutil.rmtree(Path(writer.path), ignore_errors=True)

    def _list_segment(self, seg: Path) -> None:
        listed = self._metadata()
        if listed is not None and f"{seg.name}.mcap" in listed[META]["relative_file_paths"]:
            return
        seg_meta = _yaml().load((seg / "metadata.yaml").read_text(encoding="utf8"))
        self._save(merge_metadata(listed, seg_meta))

    def _save(self, meta: dict[str, Any]) -> None:
        out = StringIO()
        _yaml().dump(meta, out)
        _write_text(self.path / "metadata.yaml", out.getvalue())


class FeatureDataset:
    """Training data: stamp_ns, log_time_ns, topic (index into `topics`), frame_id, cls (N, C),
    dense (N, C, h, w), in atomically written chunks; dataset.json holds the stream info. `dense=False` keeps
    no dense maps (a LeRobot episode's staged frames without --dense: a ViT-S's maps are 256x its class token)."""

    def __init__(self, path: Path, info: dict[str, Any], fingerprint: dict[str, Any], source: str,
                 dtype: str = DEFAULT_DTYPE, chunk_frames: int = 256, dense: bool = True) -> None:
        self.path, self.info, self.fingerprint, self.source = Path(path), info, fingerprint, source
        self.dtype, self.dense = np.dtype(dtype), dense
        self.chunk_frames = chunk_frames
        self.topics: list[str] = []
        self.written = 0
        self.notes: list[str] = []
        self._buf: list[tuple[int, int, int, str, dict[str, np.ndarray]]] = []  # topic, times, frame_id, arrays

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def open(self, resume: bool) -> set[Key]:
        if self.exists and not resume:
            raise FileExistsError(f"{self.path} exists; pass --resume to continue it or --overwrite")
        keys: set[Key] = set()
        meta = self.path / "dataset.json"
        if meta.exists():
            have = json.loads(meta.read_text(encoding="utf8"))
            check_fingerprint("dataset", self.path, have.get("fingerprint"), self.fingerprint)
            self.topics = list(have.get("topics", []))
            for tmp in self.path.glob(".*.tmp*"):
                tmp.unlink()
            for chunk in iter_chunks(self.path, arrays=("topic", "log_time_ns", "stamp_ns")):
                keys.update(zip((self.topics[i] for i in chunk["topic"]), chunk["log_time_ns"].tolist(),
                                chunk["stamp_ns"].tolist(), strict=True))
        self.path.mkdir(parents=True, exist_ok=True)
        self._save_meta(complete=False)
        return keys

    def _save_meta(self, complete: bool, extra: dict[str, Any] | None = None) -> None:
        doc = {"format": "defm_ros.features_dataset", "version": 1, "source": self.source,
               "topics": self.topics, "modality": self.info["modality"], "complete": complete,
               "dtype": self.dtype.name,
               "arrays": {"stamp_ns": "(N,) int64 header stamp", "log_time_ns": "(N,) int64 bag log time",
                          "topic": "(N,) int16 index into topics", "frame_id": "(N,) str",
                          "cls": "(N, C)", **({"dense": "(N, C, h, w)"} if self.dense else {})},
               "fingerprint": self.fingerprint, "info": self.info, **(extra or {})}
        _write_text(self.path / "dataset.json", json.dumps(doc, indent=1, sort_keys=True))

    def write(self, topic: str, log_time: int, stamp: int, frame_id: str, cls: np.ndarray,
              dense: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> None:
        """One frame; `extra`: more per-frame arrays (e.g. depth_refined), stored as (N, ...) fields of the
        chunk. A frame whose arrays have other shapes than the open chunk's starts a new chunk."""
        if topic not in self.topics:
            self.topics.append(topic)
            self._save_meta(complete=False)  # before any chunk refers to the new index
        arrays = {"cls": cls, **({"dense": dense} if self.dense else {}), **(extra or {})}
        arrays = {k: v.astype(self.dtype, copy=False) if v.dtype.kind == "f" else v for k, v in arrays.items()}
        if self._buf and {k: v.shape for k, v in arrays.items()} != {k: v.shape for k, v in self._buf[-1][4].items()}:
            self.flush()
        self._buf.append((self.topics.index(topic), log_time, stamp, frame_id, arrays))
        if len(self._buf) >= self.chunk_frames:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        k = 0
        while (self.path / f"chunk_{k:06d}.npz").exists():
            k += 1
        topic, log_time, stamp, frame_id, arrays = zip(*self._buf, strict=True)
        final = self.path / f"chunk_{k:06d}.npz"
        tmp = self.path / f".chunk_{k:06d}.tmp.npz"
        np.savez(tmp, topic=np.asarray(topic, np.int16), log_time_ns=np.asarray(log_time, np.int64),
                 stamp_ns=np.asarray(stamp, np.int64), frame_id=np.asarray(frame_id, dtype=str),
                 **{name: np.stack([a[name] for a in arrays]) for name in arrays[0]})
        os.replace(tmp, final)
        self.written += len(self._buf)
        self._buf = []

    def commit(self, complete: bool, extra: dict[str, Any] | None = None) -> None:
        self.flush()
        self._save_meta(complete, extra)


def iter_chunks(path: str | Path, arrays: tuple[str, ...] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The chunks of a dataset in write order, each a dict of arrays (all, or only `arrays`)."""
    for chunk in sorted(Path(path).glob("chunk_*.npz")):
        with np.load(chunk, allow_pickle=False) as z:
            yield {k: z[k] for k in (arrays or z.files)}


def load_dataset(path: str | Path, arrays: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A whole dataset in memory, sorted by log time: the arrays of every chunk concatenated (those that every
    chunk has, e.g. depth_refined where all frames are of one camera size; or only `arrays`), plus `topics`,
    `info` (the stream description of §5) and `complete` from dataset.json."""
    path = Path(path)
    meta = json.loads((path / "dataset.json").read_text(encoding="utf8"))
    chunks = list(iter_chunks(path, arrays and tuple({*arrays, "log_time_ns"})))
    if chunks:
        names = set(arrays or set.intersection(*(set(c) for c in chunks))) | {"log_time_ns"}
        out: dict[str, Any] = {k: np.concatenate([c[k] for c in chunks]) for k in names}
        order = np.argsort(out["log_time_ns"], kind="stable")
        out = {k: v[order] for k, v in out.items()}
    else:  # no frame yet: empty arrays of the shapes and dtypes that frames would have
        info, dtype = meta["info"], np.dtype(meta["dtype"])
        out = {"stamp_ns": np.zeros(0, np.int64), "log_time_ns": np.zeros(0, np.int64),
               "topic": np.zeros(0, np.int16), "frame_id": np.zeros(0, str),
               "cls": np.zeros((0, info["cls_channels"]), dtype),
               "dense": np.zeros((0, info["dense_channels"], *info["dense_size"]), dtype)}
    out.update(topics=meta["topics"], info=meta["info"], complete=meta["complete"], meta=meta)
    return out
