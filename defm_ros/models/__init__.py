"""The model zoo (DeFM, Theia): specs, architectures and checkpoint loading."""

from ..config import DEFAULT_DENSE_LEVEL
from .registry import MODELS, REFINERS, ModelSpec, dense_stride, get_spec

__all__ = ["MODELS", "REFINERS", "ModelSpec", "build_model", "dense_stride", "get_spec", "use_fused_attention"]


def build_model(name: str, dense_level: str = DEFAULT_DENSE_LEVEL, config: dict | None = None):
    """Build a variant with random weights (load a checkpoint into it for real use). LingBot's
    architecture comes from its checkpoint's `config`; without one, an assumed ViT-L (random weights)."""
    spec = get_spec(name)
    if spec.family == "lingbot":
        from .lingbot import ASSUMED_VITL_CONFIG, LingBotFeatures

        return LingBotFeatures(config or ASSUMED_VITL_CONFIG)
    if spec.family == "theia":
        from .theia import TheiaViT

        return TheiaViT(spec)
    if spec.family == "vit":
        from .vit import DeFMViT

        return DeFMViT(spec)
    from .cnn import DeFMCNN

    return DeFMCNN(spec, dense_level=dense_level)


def use_fused_attention(net, on: bool) -> None:
    """Attention by torch's fused kernel (SDPA: flash / memory-efficient on a GPU), or in upstream's explicit
    order of operations (exact parity with the references on the CPU). A flag on the attention modules
    (`fused_attention`), not the input's device, so that the CPU suite runs both."""
    for m in net.modules():
        if hasattr(m, "fused_attention"):
            m.fused_attention = on
