"""The DeFM model zoo: one spec per published checkpoint, named as upstream names its files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..choices import DEFAULT_DENSE_LEVEL, DENSE_LEVELS, check_choice

Family = Literal["vit", "resnet", "efficientnet", "regnet"]


@dataclass(frozen=True)
class ModelSpec:
    """What a variant is, independent of its weights.

    `stride` is the dense map's stride at the default dense level (patch size for ViTs, P4 for CNNs);
    `align` is what the input size must be a multiple of (ViT: cropped down, CNN: padded up).
    """

    name: str
    family: Family
    arch: str
    cls_dim: int
    dense_dim: int
    params_m: float
    # ViT only
    depth: int = 0
    num_heads: int = 0

    @property
    def is_vit(self) -> bool:
        return self.family == "vit"

    @property
    def align(self) -> int:
        return 14 if self.is_vit else 32

    @property
    def checkpoint_file(self) -> str:
        return f"{self.name}.pth"


_SPECS = [
    ModelSpec("defm_vit_l14", "vit", "vit_large", 1024, 1024, 307.0, depth=24, num_heads=16),
    ModelSpec("defm_vit_s14", "vit", "vit_small", 384, 384, 22.1, depth=12, num_heads=6),
    ModelSpec("defm_resnet18", "resnet", "resnet18", 512, 128, 11.7),
    ModelSpec("defm_resnet34", "resnet", "resnet34", 512, 256, 21.8),
    ModelSpec("defm_resnet50", "resnet", "resnet50", 2048, 256, 26.2),
    ModelSpec("defm_efficientnet_b0", "efficientnet", "efficientnet_b0", 192, 64, 3.01),
    ModelSpec("defm_efficientnet_b2", "efficientnet", "efficientnet_b2", 208, 128, 4.95),
    ModelSpec("defm_efficientnet_b4", "efficientnet", "efficientnet_b4", 272, 256, 14.16),
    ModelSpec("defm_efficientnet_b6", "efficientnet", "efficientnet_b6", 344, 256, 28.98),
    ModelSpec("defm_regnet_y_400mf", "regnet", "regnet_y_400mf", 440, 64, 4.1),
    ModelSpec("defm_regnet_y_800mf", "regnet", "regnet_y_800mf", 784, 128, 6.3),
    ModelSpec("defm_regnet_y_1_6gf", "regnet", "regnet_y_1_6gf", 888, 256, 12.4),
]

MODELS: dict[str, ModelSpec] = {s.name: s for s in _SPECS}


def get_spec(name: str) -> ModelSpec:
    """Look a variant up by name; the error lists the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def dense_stride(spec: ModelSpec, dense_level: str = DEFAULT_DENSE_LEVEL) -> int:
    """Stride of the dense map: the patch size for ViTs, the BiFPN level's stride for CNNs."""
    stride = DENSE_LEVELS[check_choice("dense_level", dense_level, list(DENSE_LEVELS))]
    return 14 if spec.is_vit else stride
