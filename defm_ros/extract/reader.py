"""A bag's messages as extraction events: decoded frames, skips (malformed, or already written), and the
halves of depth + colour pairs waiting for their partner."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..inputs import StampPairer, camera_topic, decode_rgbd
from .sinks import Key, stamp_ns
from .source import BagSource


@dataclass
class Frame:
    """A decoded message of a selected topic (with its colour partner, when paired), and where it goes."""

    topic: str  # the camera's topic (camera_topic): what the features are named after
    log_time: int
    stamp: int
    frame_id: str
    x: np.ndarray  # the model's input: depth in metres, or uint8 RGB
    to_bag: bool
    to_dataset: bool
    camera_info: Any = None  # its camera's (deserialized) camera_info of the same stamp, where paired with one


@dataclass
class Skip:
    """A message that gives no frame: malformed (reason, error), or already in every output (reason None)."""

    reason: str | None
    error: Exception | None
    counts: bool  # a frame of a selected topic (the progress bar counts it), not a colour partner


def read_events(source: BagSource, topics: list[str], depth_of: dict[str, str], pairers: dict[str, StampPairer],
                kind: Any, params: dict[str, Any], bag_done: set[Key] | None, ds_done: set[Key] | None,
                info_of: dict[str, str] | None = None) -> Iterator[Frame | Skip | None]:
    """One event per message, in the bag's order: a decoded frame, a skip, or None (part of a depth + colour
    (+ camera_info: `info_of`) set). `bag_done` / `ds_done`: the keys an output already holds, None without that
    output. Raises BagReadError where the bag turns unreadable."""
    partners = {**{t: (d, "color") for t, d in depth_of.items()}, **{t: (d, "camera_info") for t, d in
                                                                     (info_of or {}).items()}}
    for raw in source.messages(topics):
        try:
            msg = source.deserialize(raw)
            stamp = stamp_ns(msg.header)
        except Exception as exc:  # noqa: BLE001 - any garbage in a message is skipped
            yield Skip("undecodable message", exc, raw.topic not in partners)
            continue
        info = None
        if pairers:  # depth, colour (and camera_info) meet by stamp; the depth message is the frame
            depth_topic, role = partners.get(raw.topic, (raw.topic, "depth"))
            got = pairers[depth_topic].put(role, stamp, (raw, msg))
            if got is None:
                yield None
                continue
            (raw, msg), (_, color) = got["depth"], got["color"]
            info = got["camera_info"][1] if "camera_info" in got else None
        key = (camera_topic(raw.topic), raw.log_time, stamp)
        to_bag, to_ds = bag_done is not None and key not in bag_done, ds_done is not None and key not in ds_done
        if not (to_bag or to_ds):
            yield Skip(None, None, True)
            continue
        try:
            x = decode_rgbd(msg, color, params) if pairers else kind.decode_one(msg, params)
        except Exception as exc:  # noqa: BLE001 - a codec's ValueError, or a field of the wrong type
            yield Skip("bad depth + colour pair" if pairers else f"bad {kind.modality} image", exc, True)
            continue
        yield Frame(key[0], raw.log_time, key[2], str(msg.header.frame_id), x, to_bag, to_ds, info)

