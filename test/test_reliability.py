"""Following the publishers' reliability (SPEC §6), as ros2 bag does."""

from __future__ import annotations

import pytest

from defm_ros.reliability import follow_publishers


@pytest.mark.parametrize(("offers", "current", "want"), [
    (["reliable"], None, "reliable"),  # realsense2_camera, zed_wrapper
    (["best_effort"], None, "best_effort"),
    (["reliable", "reliable"], "best_effort", "reliable"),
    (["reliable", "best_effort"], "reliable", "best_effort"),  # a best-effort publisher would not match reliable
    ([], None, "best_effort"),  # nothing yet: best effort matches whatever appears
    ([], "reliable", "reliable"),  # a publisher that went away does not make the node resubscribe
])
def test_auto_follows(offers, current, want):
    assert follow_publishers("auto", offers, current) == want


@pytest.mark.parametrize("setting", ["reliable", "best_effort"])
def test_a_forced_setting_wins(setting):
    assert follow_publishers(setting, ["reliable"], None) == setting
    assert follow_publishers(setting, ["best_effort"], "reliable") == setting


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="qos_reliability"):
        follow_publishers("sometimes", [], None)
