"""Encoders with seeded random weights: two built with one seed hold the same weights, so that a device, a
backend or an export can be compared with the CPU's torch reference."""

from __future__ import annotations

import torch

from defm_ros import Encoder


def seeded(model: str = "defm_resnet18", seed: int = 0, **options) -> Encoder:
    """`Encoder(model, weights="random", **options)` with the random weights of `seed`."""
    torch.manual_seed(seed)
    return Encoder(model, weights="random", **options)
