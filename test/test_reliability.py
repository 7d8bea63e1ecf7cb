"""Following the publishers' reliability (SPEC §6), as ros2 bag does, without losing a frame."""

from __future__ import annotations

import pytest

from defm_ros.node.reliability import Handover, follow_publishers

BOTH = ("reliable", "best_effort")


@pytest.mark.parametrize(("offers", "current", "want"), [
    (["reliable"], (), ("reliable",)),  # realsense2_camera, zed_wrapper
    (["best_effort"], (), ("best_effort",)),
    (["reliable", "reliable"], BOTH, ("reliable",)),
    (["reliable", "best_effort"], ("reliable",), ("best_effort",)),  # best effort would not match reliable
    ([], (), BOTH),  # nothing yet: hold both, so either kind of camera's first frames arrive
    ([], ("reliable",), ("reliable",)),  # a publisher that went away does not make the node resubscribe
])
def test_auto_follows(offers, current, want):
    assert follow_publishers("auto", offers, current) == want


@pytest.mark.parametrize("setting", ["reliable", "best_effort"])
def test_a_forced_setting_wins(setting):
    assert follow_publishers(setting, [], ()) == (setting,)
    assert follow_publishers(setting, ["best_effort"], ("reliable",)) == (setting,)


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="qos_reliability"):
        follow_publishers("sometimes", [], ())


class Sub:
    def __init__(self, matched: bool = False) -> None:
        self.matched = matched


def test_an_unwanted_subscription_stays_until_the_wanted_one_has_matched():
    h = Handover()
    assert h.plan(BOTH) == list(BOTH) and h.reliability == "reliable+best_effort"
    rel, be = Sub(), Sub()
    h.add("reliable", rel)
    h.add("best_effort", be)
    assert h.retire(lambda s: s.matched) == []  # both wanted: nothing to retire
    assert h.plan(("reliable",)) == [] and h.reliability == "reliable"  # already subscribed
    assert h.retire(lambda s: s.matched) == []  # not matched yet: keep best effort, lose nothing
    rel.matched = True
    assert h.retire(lambda s: s.matched) == [be] and h.subs == {"reliable": rel}
    assert h.plan(("best_effort",)) == ["best_effort"]  # a best-effort publisher joined
    assert h.clear() == [rel] and h.reliability is None


def test_copies_are_taken_once_and_older_messages_never_after_newer():
    h = Handover()
    h.plan(BOTH)
    h.add("reliable", Sub())
    h.add("best_effort", Sub())
    info = lambda t: {"source_timestamp": t, "publication_sequence_number": t}  # noqa: E731
    assert not h.taken(info(10), b"a")
    assert h.taken(info(10), b"a")  # the same message through the other subscription
    assert not h.taken(info(12), b"c")
    assert h.taken(info(11), b"b")  # arrived late through the slower subscription: stale, not taken
    # Humble: no message info; a copy is known by its bytes
    assert not h.taken(None, b"x" * 100) and h.taken(None, b"x" * 100) and not h.taken(None, b"y" * 100)


def test_one_subscription_takes_everything():
    h = Handover()
    h.plan(("reliable",))
    h.add("reliable", Sub())
    info = {"source_timestamp": 5}
    assert not h.taken(info, b"a") and not h.taken(info, b"a")  # repeats are the publisher's, not copies


def test_the_graph_is_queried_every_tick_until_settled_then_every_tenth():
    from defm_ros.node.reliability import FOLLOW_SETTLED_EVERY, follow_due

    pending, settled = Handover(), Handover()
    pending.add("reliable", "r")
    pending.add("best_effort", "b")  # a handover: two readers
    settled.add("reliable", "r")
    assert all(follow_due([pending, settled], 2, t) for t in range(1, 25))
    assert all(follow_due([settled], 2, t) for t in range(1, 25))  # a topic not subscribed yet
    due = [t for t in range(1, 25) if follow_due([settled, settled], 2, t)]
    assert due == [FOLLOW_SETTLED_EVERY, 2 * FOLLOW_SETTLED_EVERY]
