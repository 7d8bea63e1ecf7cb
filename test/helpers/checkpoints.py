"""Checkpoints in the layouts their publishers ship, with seeded weights: the tests' stand-ins for the real files.

SMALL is a LingBot-Depth config that runs in seconds on a CPU (the oracle README's): a dinov2_vits14 RGB-D
encoder whose dim_out equals the ViT width, neck and heads of [128, 64, 32, 32, 32] with conv_transpose
resamplers.
"""

from __future__ import annotations

from pathlib import Path

HEAD = {"dim_in": [128, 64, 32, 32, 32], "dim_res_blocks": [128, 64, 32, 32, 32], "dim_out": [None] * 4 + [1],
        "resamplers": ["conv_transpose"] * 4}
SMALL = {
    "encoder": {"backbone": "dinov2_vits14", "intermediate_layers": 4, "dim_out": 384,
                "img_depth_fuse_mode": "cat_token", "depth_emb_mode": "conv_1c"},
    "neck": {"dim_in": [386, 2, 2, 2, 2], "dim_res_blocks": [128, 64, 32, 32, 32], "dim_out": [None] * 5,
             "resamplers": ["conv_transpose"] * 4},
    "depth_head": HEAD,
    "mask_head": HEAD,
}


def save_lingbot(state_dict: dict, config: dict, path: Path) -> Path:
    """LingBot-Depth's published model.pt layout: {"model_config": MDMModel kwargs, "model": state dict}."""
    import torch

    torch.save({"model_config": config, "model": state_dict}, path)
    return path


def write_checkpoint(path: Path, config: dict = SMALL, seed: int = 0) -> Path:
    """A LingBot-Depth model.pt with seeded random weights built by our own code (tests comparing with
    upstream save the oracle's instead)."""
    import torch

    from defm_ros.models.lingbot import build_lingbot

    torch.manual_seed(seed)
    return save_lingbot(build_lingbot(config).state_dict(), config, path)
