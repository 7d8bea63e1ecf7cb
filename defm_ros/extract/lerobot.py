"""Extraction into one LeRobot v3.0 dataset (`extract --lerobot`): one episode per bag, the features of every
camera and the robot's state and commands on one time grid (timegrid.py), written by lerobot_format.py.

Per bag, extract_bag stages its frames' features in a per-frame store (sinks.FeatureDataset, the same store that
--dataset writes) and, once the bag is complete, turns them and the bag's state/action messages into the
episode's rows (`write_episode`), staged beside the dataset. `assemble` then appends the staged episodes to the
dataset in the bags' order: after each bag on one machine, after all of them on Ray. So a stopped job leaves a
dataset of the episodes finished, and a resumed one adds the rest."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..inputs import camera_topic
from .guards import output_lock, write_atomic
from .lerobot_format import LeRobotWriter, check_settings, read_episodes
from .robot_msgs import message_time, reader_for
from .sinks import OutputMismatchError, load_dataset
from .source import BagReadError, BagSource, find_topics
from .timegrid import grid, hold, median_rate

STAGING = ".staging"  # below the dataset: episodes and their frames not yet in it
RATE_MESSAGES = 200  # camera messages whose stamps give the default fps


@dataclass(frozen=True)
class LeRobotOptions:
    """Where the dataset goes (`root`, OUT/lerobot) and what its rows hold: the grid's `fps`, `state` and
    `action` topics (concatenated in this order), `task` text, `dense` feature maps too, and `camera_keys`
    ((topic, name) pairs) naming cameras otherwise named after their topic."""

    root: Path
    fps: int
    state: tuple[str, ...] = ()
    action: tuple[str, ...] = ()
    task: str = ""
    dense: bool = False
    camera_keys: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.fps < 1:
            raise ValueError(f"fps must be >= 1, not {self.fps}")
        for topic, name in self.camera_keys:
            if not name or "/" in name:
                raise ValueError(f"camera key {name!r} of {topic}: a name without '/' (LeRobot refuses them)")

    @property
    def signals(self) -> dict[str, tuple[str, ...]]:
        """Column -> its topics."""
        return {k: v for k, v in (("observation.state", self.state), ("action", self.action)) if v}

    def settings(self, fingerprint: dict[str, Any]) -> dict[str, Any]:
        """What every episode of one dataset shares: the features' origin and this layout (not the task)."""
        mine = {k: v for k, v in asdict(self).items() if k not in ("root", "task")}
        return json.loads(json.dumps({"features": fingerprint, **mine}))

    def camera(self, topic: str) -> str:
        """A camera topic's name in the columns: --camera-key's, else the topic without its leading slash and
        with dots for slashes (/cam/depth -> cam.depth)."""
        named = dict(self.camera_keys)
        return named.get(topic) or named.get(camera_topic(topic)) or camera_topic(topic).strip("/").replace("/", ".")


def prepare(root: Path, resume: bool, overwrite: bool) -> None:
    """Before any bag: an existing dataset is refused unless resumed (or removed with `overwrite`)."""
    if overwrite and root.exists():
        shutil.rmtree(root)
    elif root.exists() and not resume:
        raise FileExistsError(f"{root} exists; pass --resume to continue it or --overwrite")


def check_topics(bags: Sequence[Path], options: LeRobotOptions) -> None:
    """ValueError where a bag records a state/action topic as a type no reader takes (before the model loads);
    a bag that cannot be opened is left to its extraction, which reports it."""
    wanted = {t for topics in options.signals.values() for t in topics}
    for bag in bags:
        try:
            with BagSource(bag) as source:
                for t in source.topics:
                    if t.name in wanted:
                        reader_for(t.name, t.msgtype)
        except BagReadError:
            continue


def default_fps(bag: Path, topics: list[str] | None, modality: str) -> int:
    """The first camera topic's median rate (header stamps of its first messages), rounded."""
    with BagSource(bag) as source:
        cams = topics or [t.name for t in find_topics(source, modality)]
        if not cams:
            raise BagReadError(f"{bag}: no {modality} topic to take the dataset's rate from (pass --fps)")
        stamps = []
        for raw in source.messages([cams[0]]):
            stamps.append(message_time(source.deserialize(raw), raw.log_time))
            if len(stamps) >= RATE_MESSAGES:
                break
    try:
        return median_rate(np.array(stamps))
    except ValueError as exc:
        raise BagReadError(f"{bag}: {cams[0]}: {exc} (pass --fps)") from None


def episode_key(out: Path, name: str, root: Path) -> str:
    """A bag's episode, by its outputs' path below OUT (robot1/run and robot2/run differ)."""
    return (Path(out) / name).resolve().relative_to(Path(root).resolve().parent).as_posix()


def staging(root: Path, key: str) -> Path:
    return Path(root) / STAGING / key


def pending(options: LeRobotOptions, key: str) -> bool:
    """True while the bag's episode is neither in the dataset nor staged."""
    if (staging(options.root, key) / "episode.json").exists():
        return False
    return key not in {e["defm_ros/episode"] for e in read_episodes(options.root, ["defm_ros/episode"])}


def open_episode(source: BagSource, options: LeRobotOptions, fingerprint: dict[str, Any]) -> None:
    """Refuse a dataset of other settings, and a bag lacking a state/action topic (BagReadError, that bag
    alone), before anything is encoded."""
    try:
        check_settings(options.root, options.settings(fingerprint))
    except ValueError as exc:
        raise OutputMismatchError(str(exc)) from None
    have = {t.name: t for t in source.topics}
    topics = [t for ts in options.signals.values() for t in ts]
    if missing := [t for t in topics if t not in have or have[t].count == 0]:
        raise BagReadError(f"{source.path}: no messages on {', '.join(missing)} (state/action topics); it has "
                           f"{sorted(have)}")
    for t in topics:
        reader_for(t, have[t].msgtype)


def read_signal(source: BagSource, topic: str, bad: dict[str, int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A state/action topic's samples: (times ns, values (n, d) float32, the d names). A message that cannot be
    read costs itself (counted in `bad`, as a corrupt frame is); none readable is an error for the bag. Every
    message must name its values as the first does (a JointState topic with joints in another order, or only
    some of them, would put other joints' values in a column: refused)."""
    times, values, names = [], [], None
    for raw in source.messages([topic]):
        try:
            msg = source.deserialize(raw)
            reader = reader_for(topic, raw.msgtype)
            row, these = reader.values(msg), reader.names(msg)
        except Exception:  # noqa: BLE001 - any garbage in a message (or a JointState without positions)
            bad[topic] = bad.get(topic, 0) + 1
            continue
        names = these if names is None else names
        if these != names or len(row) != len(names):
            raise BagReadError(f"{source.path}: {topic} changes what its values are: {names} then {these} "
                               f"({len(row)} values); one topic per set of joints, in one order")
        times.append(message_time(msg, raw.log_time))
        values.append(row)
    if not times:
        raise BagReadError(f"{source.path}: none of the {bad.get(topic, 0)} messages on {topic} could be read")
    return np.array(times, np.int64), np.array(values, np.float32).reshape(len(times), -1), names or []


def read_frames(store: Path, options: LeRobotOptions) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Camera name -> (header stamps, class tokens, dense maps or None) of the frames in the per-frame store."""
    data = load_dataset(store, ("topic", "stamp_ns", "cls", "dense") if options.dense else ("topic", "stamp_ns", "cls"))
    out = {}
    for i, topic in enumerate(data["topics"]):
        sel = data["topic"] == i
        out[options.camera(topic)] = (data["stamp_ns"][sel], data["cls"][sel],
                                      data["dense"][sel] if options.dense else None)
    return out


def build_episode(frames: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
                  signals: dict[str, list[tuple[np.ndarray, np.ndarray, list[str]]]], fps: int
                  ) -> tuple[dict[str, np.ndarray], dict[str, list[str]], int, int]:
    """The rows of one episode: (columns, names of the state/action elements, t0 ns, rows left out). Row k
    stands for t0 + k / fps, t0 the first frame's stamp; each value is the newest at or before it; rows before
    every source has a sample are left out (ValueError when that leaves none)."""
    t0 = min(int(s.min()) for s, _, _ in frames.values())
    times = grid(t0, max(int(s.max()) for s, _, _ in frames.values()), fps)
    held = {cam: hold(s, times) for cam, (s, _, _) in frames.items()}
    sig_held = {col: [hold(s, times) for s, _, _ in topics] for col, topics in signals.items()}
    every = [*held.values(), *(i for idx in sig_held.values() for i in idx)]
    keep = np.all(np.stack(every) >= 0, axis=0)
    if not keep.any():
        raise ValueError("no time of the grid has a message of every camera and state/action topic")
    k = np.flatnonzero(keep)
    cols: dict[str, np.ndarray] = {"timestamp": (k / fps).astype(np.float32),
                                   "frame_index": np.arange(len(k), dtype=np.int64)}
    for cam, (stamps, cls, dense) in frames.items():
        idx = held[cam][k]
        cols[f"observation.{cam}_embedding"] = cls[idx].astype(np.float32)
        if dense is not None:
            cols[f"observation.{cam}_features"] = dense[idx]
        cols[f"observation.{cam}_stamp_ns"] = stamps[idx]
    names = {}
    for col, topics in signals.items():
        cols[col] = np.concatenate([v[i[k]] for (_, v, _), i in zip(topics, sig_held[col], strict=True)], axis=1)
        names[col] = [n for _, _, ns in topics for n in ns]
    return cols, names, t0, int(len(keep) - len(k))


def write_episode(source: BagSource, store: Path, options: LeRobotOptions, key: str) -> str:
    """Stage one bag's episode, built from its frames in `store` and its state/action messages; returns what
    the report says of it. BagReadError where its messages give no rows."""
    frames = read_frames(store, options)
    if not frames:
        raise BagReadError(f"{source.path}: no frames to make an episode of")
    bad: dict[str, int] = {}
    signals = {col: [read_signal(source, t, bad) for t in topics] for col, topics in options.signals.items()}
    try:
        cols, names, t0, left_out = build_episode(frames, signals, options.fps)
    except ValueError as exc:
        raise BagReadError(f"{source.path}: {exc}") from None
    for col, topics in options.signals.items():  # one name per element, several topics told apart
        if len(topics) > 1:
            names[col] = [f"{topic}:{n}" for topic, (_, _, ns) in zip(topics, signals[col], strict=True) for n in ns]
    where = staging(options.root, key)
    write_atomic(where / "episode.npz", lambda f: np.savez(f, **cols))
    meta = {"names": names, "t0_ns": t0, "left_out": left_out, "source": str(source.path)}
    write_atomic(where / "episode.json", lambda f: f.write(json.dumps(meta).encode("utf8")))
    return "; ".join([f"LeRobot episode staged: {len(cols['timestamp'])} rows at {options.fps} Hz",
                      *([f"{left_out} row(s) left out before every topic had a message"] if left_out else []),
                      *(f"{n} unreadable message(s) on {t} skipped" for t, n in bad.items())])


def assemble(options: LeRobotOptions, keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """Append the staged episodes of `keys` to the dataset, in that order (those not staged: skipped), and drop
    their staging. Returns a line per episode added, and one per episode that cannot join the dataset (its
    columns differ from the dataset's: kept staged, the others still added)."""
    added, failed = [], []
    with output_lock(options.root.parent / ".locks" / "lerobot.lock"):
        writer = LeRobotWriter(options.root)
        for key in keys:
            where = staging(options.root, key)
            if not (where / "episode.json").exists():
                continue
            meta = json.loads((where / "episode.json").read_text(encoding="utf8"))
            with np.load(where / "episode.npz") as z:
                cols = {k: z[k] for k in z.files}
            extra = {"defm_ros/episode": key, "defm_ros/source": meta["source"], "defm_ros/t0_ns": meta["t0_ns"],
                     "defm_ros/rows_left_out": meta["left_out"]}
            try:
                ep = writer.append(cols, meta["names"], options.fps, options.task, extra)
            except ValueError as exc:
                failed.append(f"{meta['source']}: its episode cannot join {options.root}: {exc}")
                continue
            added.append(f"{meta['source']}: episode {ep} of {options.root}: {len(cols['timestamp'])} rows" + (
                f" ({meta['left_out']} left out before every topic had a message)" if meta["left_out"] else ""))
            shutil.rmtree(where)
        if (options.root / STAGING).exists() and not any(p.is_file() for p in (options.root / STAGING).rglob("*")):
            shutil.rmtree(options.root / STAGING)
    return added, failed
