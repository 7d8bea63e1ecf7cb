"""The episode's time grid and the zero-order hold onto it (extract/timegrid.py)."""

from __future__ import annotations

import numpy as np
import pytest

from defm_ros.extract.timegrid import grid, hold, median_rate


@pytest.mark.parametrize(("t0", "t_end", "fps", "want"), [
    (5, 5 + 10**9, 10, [5 + k * 10**8 for k in range(11)]),  # the end is a grid time: kept
    (5, 5 + 10**9 - 1, 10, [5 + k * 10**8 for k in range(10)]),  # just before it: not
    (0, 10**8, 30, [0, 33_333_333, 66_666_666, 100_000_000]),  # k * 1e9 // fps, exact in integers
    (7, 7, 50, [7]),
])
def test_grid_runs_from_t0_to_the_last_time_at_or_before_the_end(t0, t_end, fps, want):
    assert grid(t0, t_end, fps).tolist() == want


def test_grid_refuses_what_makes_no_grid():
    with pytest.raises(ValueError, match="fps"):
        grid(0, 10, 0)
    with pytest.raises(ValueError, match="before it starts"):
        grid(10, 0, 10)


def test_hold_takes_the_newest_sample_at_or_before_each_time():
    stamps = np.array([30, 10, 20, 20])  # out of order; two samples share a stamp
    assert hold(stamps, np.array([5, 10, 15, 20, 29, 30, 99])).tolist() == [-1, 1, 1, 3, 3, 0, 0]


def test_median_rate_is_robust_to_jitter_and_a_dropped_message():
    rng = np.random.default_rng(0)
    stamps = np.arange(50) * 100_000_000 + rng.integers(-15, 16, 50) * 1_000_000
    assert median_rate(np.delete(stamps, 20)) == 10
    assert median_rate(np.array([0, 33_333_333, 66_666_666])) == 30
    with pytest.raises(ValueError, match="two messages"):
        median_rate(np.array([5, 5]))
