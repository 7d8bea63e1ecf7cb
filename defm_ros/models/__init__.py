"""The model zoo: specs and families (registry.py), architectures (vit, theia, lingbot, cnn) and checkpoint
loading (weights.py). DeFM takes depth, Theia colour, LingBot-Depth aligned colour + depth."""

from collections.abc import Callable
from typing import Any

from ..config import DEFAULT_DENSE_LEVEL
from .registry import FAMILIES, MODELS, REFINERS, ModelSpec, dense_stride, get_spec

__all__ = ["FAMILIES", "MODELS", "REFINERS", "ModelSpec", "build_model", "dense_stride", "get_spec",
           "use_fused_attention"]


def _vit(spec: ModelSpec, dense_level: str, config: dict | None) -> Any:
    from .vit import DeFMViT

    return DeFMViT(spec)


def _cnn(spec: ModelSpec, dense_level: str, config: dict | None) -> Any:
    from .cnn import DeFMCNN

    return DeFMCNN(spec, dense_level=dense_level)


def _theia(spec: ModelSpec, dense_level: str, config: dict | None) -> Any:
    from .theia import TheiaViT

    return TheiaViT(spec)


def _lingbot(spec: ModelSpec, dense_level: str, config: dict | None) -> Any:
    """The feature model, or the refiner (REFINERS); without a checkpoint's config, an assumed ViT-L."""
    from .lingbot import ASSUMED_VITL_CONFIG, LingBotFeatures, build_lingbot

    build = build_lingbot if spec.name in REFINERS else LingBotFeatures
    return build(config or ASSUMED_VITL_CONFIG)


# Family.builder -> how it is built (imported on use: the registry and the CLI's --help need no torch)
BUILDERS: dict[str, Callable[[ModelSpec, str, dict | None], Any]] = {
    "vit": _vit, "cnn": _cnn, "theia": _theia, "lingbot": _lingbot}


def build_model(name: str, dense_level: str = DEFAULT_DENSE_LEVEL, config: dict | None = None) -> Any:
    """Build a variant (of MODELS or REFINERS) with random weights; load a checkpoint into it for real use.
    `config`: the architecture, for families whose checkpoints carry it (LingBot's model_config)."""
    spec = get_spec(name, MODELS if name in MODELS else REFINERS)
    return BUILDERS[spec.fam.builder](spec, dense_level, config)


def use_fused_attention(net, on: bool) -> None:
    """Attention by torch's fused kernel (SDPA: flash / memory-efficient on a GPU), or in upstream's explicit
    order of operations (exact parity with the references on the CPU). A flag on the attention modules
    (`fused_attention`), not the input's device, so that the CPU suite runs both."""
    for m in net.modules():
        if hasattr(m, "fused_attention"):
            m.fused_attention = on
