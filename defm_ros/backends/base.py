"""The one interface between the Encoder and its inference backends.

A backend takes a model's raw input (depth in metres, ...) and a Preprocess, and returns (cls, dense).
It reports what it really runs on (device, precision, providers, downgrades) in a BackendReport;
the Encoder writes that into the stream description. A backend never edits the description itself.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..preprocess.base import Preprocess

log = logging.getLogger("defm_ros")


class DeviceUnavailableError(RuntimeError):
    """A device, provider or precision that was asked for strictly (strict=True) and cannot be had."""


def downgrade(msg: str, strict: bool, warnings: list[str]) -> None:
    """Say a downgrade out loud (the log and `warnings`), or refuse it (strict). `msg`: "what; instead"."""
    if strict:
        raise DeviceUnavailableError(msg.split(";")[0] + " (strict: not falling back)")
    log.warning(msg)
    warnings.append(msg)


@dataclass
class BackendReport:
    """What a backend runs on, as built; `warnings` are the downgrades it had to make."""

    backend: str
    device: str
    precision: str
    providers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """Runs one loaded network on one device. `infer` is what the Encoder calls."""

    name: ClassVar[str]
    device: torch.device  # where raw inputs must live: preprocessing runs here too

    def preprocess(self, raw: torch.Tensor, prep: Preprocess) -> torch.Tensor:
        """Raw input -> network input on this backend's device (torch, eagerly)."""
        return prep(raw)

    @abstractmethod
    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input (as `preprocess` returns it) -> (cls (B, C), dense (B, C', h, w))."""

    def infer(self, raw: torch.Tensor, prep: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw input with a batch dim -> (cls, dense)."""
        return self.run(self.preprocess(raw, prep))

    @abstractmethod
    def report(self) -> BackendReport: ...

    def close(self) -> None:  # noqa: B027 - optional: a backend that holds nothing on a device frees nothing
        """Free what the backend holds on its device; it is not used afterwards."""
