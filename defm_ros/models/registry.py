"""The model zoo: one spec per published checkpoint, named as upstream names its files.

Two families of encoders share the Encoder, the node and the tools: DeFM (depth, Apache-2.0) and
Theia (colour; its code and weights are for non-commercial research only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..choices import DEFAULT_DENSE_LEVEL, DENSE_LEVELS, check_choice

Family = Literal["vit", "resnet", "efficientnet", "regnet", "theia"]
Modality = Literal["depth", "color"]
DEFM_REPO = "leggedrobotics/defm"
DEFM_LICENSE = "Apache-2.0"
THEIA_LICENSE = ("non-commercial research only (Theia's code and weights, The AI Institute's licence: "
                 "https://huggingface.co/theaiinstitute/theia-base-patch16-224-cdiv)")
PATCH = {"vit": 14, "theia": 16}  # ViT families: patch size (the input is cropped to multiples of it)


@dataclass(frozen=True)
class ModelSpec:
    """What a variant is, independent of its weights.

    `align` is what the input size must be a multiple of (ViTs: cropped down to the patch size, CNNs:
    padded up to 32). Checkpoints: `hub_file` in the Hub repo `hub_repo`, or `local_file` below the
    package's models/ folder; their parameters sit under `checkpoint_prefix`, and keys under
    `skipped_prefixes` (training-time heads) are accounted for by name and left out.
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
    modality: Modality = "depth"
    hub_repo: str = DEFM_REPO
    license: str = DEFM_LICENSE
    checkpoint_prefix: str = ""
    skipped_prefixes: tuple[str, ...] = ()

    @property
    def is_vit(self) -> bool:
        return self.family in PATCH

    @property
    def patch(self) -> int:
        return PATCH.get(self.family, 0)

    @property
    def align(self) -> int:
        return self.patch or 32

    @property
    def hub_file(self) -> str:
        return "model.safetensors" if self.family == "theia" else f"{self.name}.pth"

    @property
    def local_file(self) -> str:
        """Below models/: DeFM's files by their own names; Theia's all share one name, so one folder each."""
        return f"{self.name}/{self.hub_file}" if self.family == "theia" else self.hub_file


def _theia(size: str, dim: int, heads: int, params_m: float) -> ModelSpec:
    return ModelSpec(f"theia_{size}", "theia", f"deit_{size}", dim, dim, params_m, depth=12, num_heads=heads,
                     modality="color", hub_repo=f"theaiinstitute/theia-{size}-patch16-224-cdiv",
                     license=THEIA_LICENSE, checkpoint_prefix="backbone.model.", skipped_prefixes=("translator.",))


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
    _theia("tiny", 192, 3, 5.5),
    _theia("small", 384, 6, 21.7),
    _theia("base", 768, 12, 85.8),
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
    return spec.patch or stride
