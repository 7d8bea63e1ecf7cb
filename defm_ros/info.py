"""The stream description: what a feature message means. It is published on ~/features/info,
written next to exported ONNX files and returned as Encoder.info, so all three always agree."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import DEFAULT_BACKEND, DEFAULT_DEPTH_MODE, DEFAULT_DEVICE, DEFAULT_PRECISION


@dataclass
class StreamInfo:
    model: str
    family: str
    input_size: tuple[int, int]  # the size depth is resized to
    padded_size: tuple[int, int]  # the size the network sees (CNNs pad to multiples of 32)
    stride: int
    dense_level: str
    dense_channels: int
    dense_size: tuple[int, int]
    cls_channels: int
    depth_mode: str = DEFAULT_DEPTH_MODE
    weights: str = ""
    checkpoint_sha256: str = ""
    random_weights: bool = False
    backend: str = DEFAULT_BACKEND
    device: str = DEFAULT_DEVICE
    precision: str = DEFAULT_PRECISION
    providers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    modality: str = "depth"  # what the model takes: depth (DeFM) or color (Theia)
    license: str = ""
    normalization: dict[str, Any] = field(default_factory=dict)  # the model's Preprocess.describe()
    checkpoint_skipped: dict[str, int] = field(default_factory=dict)  # key groups left out on purpose
    layout: dict[str, str] = field(
        default_factory=lambda: {"dense": "HWC float row-major, pixel (i, j) is the C-dim feature",
                                 "cls": "1x1xC"}
    )
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"], d["padded_size"], d["dense_size"] = (
            list(self.input_size), list(self.padded_size), list(self.dense_size))
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamInfo:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("input_size", "padded_size", "dense_size"):
            known[key] = tuple(known[key])
        return cls(**known)
