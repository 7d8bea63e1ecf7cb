"""The upstream code the tests compare with, built offline with random weights: the `defm` package, and
LingBot-Depth's model code (../shared/oracles/lingbot_depth, package `mdm`)."""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

import pytest
import torch

from defm_ros.sample_data import data_root

from .checkpoints import SMALL

try:  # defm 1.1.0 needs Python >= 3.11: without it only the parity tests skip, not their modules
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from defm import utils as upstream_utils
        from defm.model_factory import get_defm_config
        from defm.models import vision_transformer as upstream_vits
        from defm.models.efficientnet_bifpn import EfficientNetBiFPN
        from defm.models.regnet_bifpn import RegNetBiFPN
        from defm.models.resnet_bifpn import ResNetBiFPN
    _CNN = {"resnet": ResNetBiFPN, "regnet": RegNetBiFPN, "efficientnet": EfficientNetBiFPN}
    MISSING = None
except ImportError as exc:
    MISSING = f"the upstream defm package (test oracle) is not installed ({exc}); it needs Python >= 3.11"


def _need() -> None:
    if MISSING:
        pytest.skip(MISSING)


def preprocess_depth_image(*args, **kwargs):
    _need()
    return upstream_utils.preprocess_depth_image(*args, **kwargs)


def preprocess_depth_batch(*args, **kwargs):
    _need()
    return upstream_utils.preprocess_depth_batch(*args, **kwargs)


def preprocess_depth_dav2(*args, **kwargs):
    _need()
    return upstream_utils.preprocess_depth_dav2(*args, **kwargs)


def upstream_model(name: str, seed: int = 0) -> torch.nn.Module:
    """Upstream's architecture for `name`, as create_defm_model builds it, without any download.

    Every parameter is perturbed, so that norms and layer scales are not at their trivial init.
    """
    _need()
    cfg = get_defm_config(name)
    torch.manual_seed(seed)
    if "vit" in cfg.arch:
        model = upstream_vits.__dict__[cfg.arch](
            img_size=cfg.global_crops_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
            init_values=cfg.layerscale, ffn_layer=cfg.ffn_layer, block_chunks=cfg.block_chunks,
            qkv_bias=cfg.qkv_bias, proj_bias=cfg.proj_bias, ffn_bias=cfg.ffn_bias,
            num_register_tokens=cfg.num_register_tokens, interpolate_offset=cfg.interpolate_offset,
            interpolate_antialias=cfg.interpolate_antialias)
    else:
        family = next(k for k in _CNN if k in cfg.arch)
        with contextlib.redirect_stdout(io.StringIO()):  # upstream prints channel lists
            model = _CNN[family](backbone_name=cfg.arch, out_channels=cfg.out_channels, pretrained=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def upstream_forward(model: torch.nn.Module, x: torch.Tensor, level: str = "P4") -> tuple[torch.Tensor, torch.Tensor]:
    """(class token, dense map) the way upstream's README and notebooks read them."""
    with torch.no_grad():
        if hasattr(model, "get_intermediate_layers"):
            ((dense, cls),) = model.get_intermediate_layers(x, n=1, reshape=True, return_class_token=True)
            return cls, dense
        out = model(x)
        return out["global_backbone"], out["dense_bifpn"][level]


LINGBOT_ORACLE = data_root().parent / "oracles" / "lingbot_depth" if data_root() else None


def lingbot_oracle(config: dict = SMALL, seed: int = 0) -> torch.nn.Module:
    """Upstream's MDMModel, every parameter perturbed so that norms and layer scales are not at their init.
    Its code is imported on first use, so that only the tests that compare with it skip where it is absent."""
    if LINGBOT_ORACLE is None or not (LINGBOT_ORACLE / "oracle.py").is_file():
        pytest.skip("the LingBot-Depth oracle (../shared/oracles/lingbot_depth) is not here")
    if str(LINGBOT_ORACLE) not in sys.path:
        sys.path.insert(0, str(LINGBOT_ORACLE))
    from oracle import MDMModel

    torch.manual_seed(seed)
    model = MDMModel(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model
