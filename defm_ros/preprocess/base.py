"""What every model family's preprocessing is: a frame's geometry, and the Preprocess the backends run.

A Preprocess turns a model's raw input (depth in metres, uint8 RGB, packed RGB-D) into the network input,
on the input's device. `mean` and `std` come from the model's family (models.registry.FAMILIES), so the
numbers live in one place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class InputGeometry:
    """Where a frame goes: resized to `resize`, then zero-padded (after normalization) to `padded`."""

    resize: tuple[int, int]
    padded: tuple[int, int]

    @classmethod
    def for_model(cls, input_size: tuple[int, int], align: int, pad: bool) -> InputGeometry:
        """ViTs crop the size down to multiples of 14; BiFPN CNNs pad it up to multiples of 32."""
        h, w = (int(v) for v in input_size)
        if pad:
            return cls((h, w), (-(-h // align) * align, -(-w // align) * align))
        h, w = h // align * align, w // align * align
        if h == 0 or w == 0:
            raise ValueError(f"input_size {input_size} is smaller than one {align}-pixel patch")
        return cls((h, w), (h, w))


@dataclass(frozen=True)
class Preprocess(ABC):
    """A family's raw input -> network input. A backend runs it eagerly on its device (`module`, one per
    camera size, kept while it is open), or puts `fixed(camera_size)` into an exported graph."""

    geometry: InputGeometry
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_name: ClassVar[str]  # the raw input's name in an exported graph
    modality: ClassVar[str]  # which sample frames check an export
    input_description: ClassVar[str]
    net_channels: ClassVar[int]  # channels of the network input it makes
    raw_channels: ClassVar[int]  # channels of the raw input's last dim; 0: none, (B, H, W)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return self.module(self.raw_size(raw), raw.device)(raw)

    def raw_size(self, raw: torch.Tensor) -> tuple[int, int]:
        """The camera size (H, W) of a raw batch."""
        last = -3 if self.raw_channels else -2
        return int(raw.shape[last]), int(raw.shape[last + 1])

    def module(self, camera_size: tuple[int, int], device: torch.device) -> nn.Module:
        """The eager preprocessing of one camera size, on `device`."""
        return self.fixed(camera_size).to(device)

    @abstractmethod
    def check(self, raw: torch.Tensor, model: str) -> None:
        """ValueError unless `raw` is this modality's input, one frame or a batch (the text names `model`)."""

    @abstractmethod
    def fixed(self, camera_size: tuple[int, int]) -> nn.Module:
        """The preprocessing of one fixed camera size, in exportable ops."""

    @abstractmethod
    def example(self, batch: int, camera_size: tuple[int, int]) -> torch.Tensor:
        """A random raw batch of that camera size (to trace and check an export)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What it does, for the stream description and an exported file's sidecar."""

    def adopt(self, normalization: dict[str, Any]) -> Preprocess:
        """This preprocessing with the numbers a checkpoint (or a file exported from one) was trained with:
        `normalization` as `describe()` writes it."""
        return replace(self, mean=tuple(normalization["mean"]), std=tuple(normalization["std"]))
