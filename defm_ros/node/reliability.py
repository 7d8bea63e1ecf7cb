"""Which reliability the input subscription should have, given what the publishers offer (SPEC §6).

A best-effort subscription gets about 1 in 10 of a reliable camera's 614 KB frames on Fast DDS, so the
node follows the publishers as ros2 bag does: reliable only when every publisher offers it. Before any
publisher is known it holds both a reliable and a best-effort subscription, so the first frames of
either kind of camera arrive; Handover keeps an old subscription until its replacement has matched,
so no change of reliability loses a frame. Pure logic on policy names; the node maps them to rclpy's ReliabilityPolicy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from ..config import RELIABILITIES, check_choice

FOLLOW_SETTLED_EVERY = 10  # ticks of the node's 0.1 s follow timer between graph queries once settled: 1 s


def follow_publishers(setting: str, offers: Sequence[str], current: tuple[str, ...]) -> tuple[str, ...]:
    """The reliabilities to subscribe with: one, or both while no publisher is known.

    `setting`: the qos_reliability parameter ('auto' follows the publishers); `offers`: each publisher's
    reliability; `current`: what the node subscribes with now (empty before it subscribes). A publisher
    that goes away changes nothing.
    """
    if check_choice("qos_reliability", setting, RELIABILITIES) != "auto":
        return (setting,)
    if not offers:
        return current or ("reliable", "best_effort")
    return ("reliable",) if all(o == "reliable" for o in offers) else ("best_effort",)


class Handover:
    """One input topic's subscriptions by reliability, and the ones wanted (follow_publishers).

    A new subscription needs discovery before it receives anything (on Fast DDS a few hundred ms, a few
    frames at camera rates), so one that is no longer wanted stays until every wanted one has matched
    every publisher. While two are live a message can arrive twice, in either order; `taken` lets only
    the first copy of a message newer than any taken through.
    """

    def __init__(self) -> None:
        self.subs: dict[str, Any] = {}  # reliability -> subscription
        self.wanted: tuple[str, ...] = ()
        self._seen: deque[Hashable] = deque(maxlen=8)
        self._newest: int | None = None

    @property
    def reliability(self) -> str | None:
        """What the topic is subscribed with, for diagnostics: 'reliable+best_effort' until a publisher is known."""
        return "+".join(self.wanted) or None

    def plan(self, want: tuple[str, ...]) -> list[str]:
        """Make `want` the wanted reliabilities; returns those still to subscribe with (then `add` each)."""
        self.wanted = want
        return [r for r in want if r not in self.subs]

    def add(self, reliability: str, sub: Any) -> None:
        self.subs[reliability] = sub

    def retire(self, matched: Callable[[Any], bool]) -> list[Any]:
        """The unwanted subscriptions to destroy now: all of them once each wanted one is `matched`."""
        if len(self.subs) == len(self.wanted) or not all(matched(self.subs[r]) for r in self.wanted):
            return []
        old = [sub for r, sub in self.subs.items() if r not in self.wanted]
        self.subs = {r: self.subs[r] for r in self.wanted}
        self._forget()
        return old

    def clear(self) -> list[Any]:
        """All subscriptions, to destroy (deactivate)."""
        subs, self.subs, self.wanted = list(self.subs.values()), {}, ()
        self._forget()
        return subs

    def taken(self, info: dict | None, serialized: bytes) -> bool:
        """Whether this message (or a newer one) already came through another subscription.

        `info`: rclpy's message info (Iron and later): the writer's source timestamp orders messages.
        Without it (Humble) a copy is known by its serialized header and size.
        """
        if len(self.subs) < 2:
            return False
        if info and info.get("source_timestamp"):
            stamp = info["source_timestamp"]
            if self._newest is not None and stamp <= self._newest:
                return True
            self._newest = stamp
            return False
        key = (bytes(serialized[:64]), len(serialized))
        if key in self._seen:
            return True
        self._seen.append(key)
        return False

    def _forget(self) -> None:
        self._seen.clear()
        self._newest = None


def follow_due(handovers: Sequence[Handover], topics: int, tick: int) -> bool:
    """Whether the node queries the graph on this tick of its follow timer (a query per input topic).

    Every tick while a topic has no subscription yet or two (a handover: the second copy of each frame
    costs the reliable reader frames); once every topic has one, every FOLLOW_SETTLED_EVERY-th tick, so a
    new publisher of another reliability is still followed within a second.
    """
    settled = len(handovers) == topics and all(len(h.subs) == 1 for h in handovers)
    return not settled or tick % FOLLOW_SETTLED_EVERY == 0
