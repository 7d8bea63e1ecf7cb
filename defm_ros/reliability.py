"""Which reliability the input subscription should have, given what the publishers offer (SPEC §6).

A best-effort subscription gets about 1 in 10 of a reliable camera's 614 KB frames on Fast DDS, so the
node follows the publishers as ros2 bag does: reliable only when every publisher offers it. Pure
logic on policy names; the node maps them to rclpy's ReliabilityPolicy.
"""

from __future__ import annotations

from collections.abc import Sequence

from .choices import RELIABILITIES, check_choice


def follow_publishers(setting: str, offers: Sequence[str], current: str | None) -> str:
    """'reliable' or 'best_effort' for the subscription.

    `setting`: the qos_reliability parameter ('auto' follows the publishers); `offers`: each publisher's
    reliability; `current`: the subscription's now (None before there is one). With no publisher yet,
    keep what there is, or best effort, which matches any publisher that appears.
    """
    if check_choice("qos_reliability", setting, RELIABILITIES) != "auto":
        return setting
    if not offers:
        return current or "best_effort"
    return "reliable" if all(o == "reliable" for o in offers) else "best_effort"
