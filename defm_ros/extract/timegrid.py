"""One time grid per episode and the zero-order hold onto it: the alignment that puts features, robot state and
commands recorded at different rates into the rows of a training dataset (LeRobot format, lerobot.py).

Row k stands for bag time t0 + k / fps (ns, integer arithmetic: exact for any integer fps), and every value in a
row is the newest sample at or before that time."""

from __future__ import annotations

import numpy as np


def grid(t0: int, t_end: int, fps: int) -> np.ndarray:
    """Grid times (int64 ns) from `t0` to the last one at or before `t_end`: t0 + floor(k * 1e9 / fps)."""
    if fps < 1:
        raise ValueError(f"fps must be >= 1, not {fps}")
    if t_end < t0:
        raise ValueError(f"the episode ends ({t_end}) before it starts ({t0})")
    last = (t_end - t0) * fps // 10**9
    return t0 + (np.arange(last + 1, dtype=np.int64) * 10**9) // fps


def hold(stamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each of `times`, the index into `stamps` of the newest sample at or before it (zero-order hold); -1
    where none is. `stamps` need not be sorted (messages arrive out of stamp order); of equal stamps the one
    given last wins, as a later message with the same stamp replaces the earlier."""
    stamps = np.asarray(stamps, np.int64)
    order = np.argsort(stamps, kind="stable")
    pos = np.searchsorted(stamps[order], np.asarray(times, np.int64), side="right") - 1
    return np.where(pos >= 0, order[np.maximum(pos, 0)], -1)


def median_rate(stamps: np.ndarray) -> int:
    """Messages per second (rounded) of a stream, from the median interval of its sorted stamps (ns): robust to
    jitter and to a dropped message."""
    diffs = np.diff(np.sort(np.asarray(stamps, np.int64)))
    diffs = diffs[diffs > 0]
    if not len(diffs):
        raise ValueError("the rate of a stream needs two messages with different stamps")
    return max(1, round(1e9 / float(np.median(diffs))))
