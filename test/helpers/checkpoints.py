"""Checkpoints in the layouts their publishers ship, with seeded weights: the tests' stand-ins for the real files.

SMALL is the LingBot-Depth config that runs in seconds on a CPU (models.lingbot.SMALL_CONFIG).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from defm_ros.models.lingbot import SMALL_CONFIG

SMALL = SMALL_CONFIG


def save_defm(state_dict: dict, path: Path, wrap: bool = False) -> Path:
    """DeFM's published <name>.pth: a plain state dict (`wrap`: under "model", as training scripts save it)."""
    import torch

    torch.save({"model": state_dict} if wrap else state_dict, path)
    return path


# The parameters of one of Theia's translator heads (its published lconv translator: a LightConvAdapterHead)
THEIA_HEAD = ("pad.1.weight", "pad.1.bias", "adapter.0.weight", "adapter.0.bias", "adapter.1.weight", "adapter.1.bias",
              "adapter.8.weight", "adapter.8.bias")


def save_theia(backbone: dict, path: Path, extra: dict | None = None, teachers: Sequence[str] = ()) -> Path:
    """Theia's published model.safetensors: the backbone (as `backbone` names it: transformers 4's parameter names in
    the published files) under backbone.model., a training-time translator head per teacher in `teachers`
    (translator.translator_heads.<teacher>.*), and `extra` keys as they are (e.g. a stray key)."""
    import torch
    from safetensors.torch import save_file

    sd = {f"backbone.model.{k}": v.contiguous() for k, v in backbone.items()}
    heads = {f"translator.translator_heads.{t}.{p}": torch.randn(4, 2) for t in teachers for p in THEIA_HEAD}
    save_file({**sd, **heads, **(extra or {})}, str(path))
    return path


def save_lingbot(state_dict: dict, config: dict, path: Path) -> Path:
    """LingBot-Depth's published model.pt layout: {"model_config": MDMModel kwargs, "model": state dict}."""
    import torch

    torch.save({"model_config": config, "model": state_dict}, path)
    return path


def write_checkpoint(path: Path, model: str, seed: int | None = 0, config: dict = SMALL) -> Path:
    """`model`'s random weights after torch.manual_seed(seed) (None: the generator as it stands), in the file its
    publisher ships, so that a test and the node it starts, given one seed, hold one model. LingBot: the whole
    model of `config` (the refiners and the RGB-D encoder read the same model.pt), built by our own code (tests
    comparing with upstream save the oracle's instead)."""
    import torch

    from defm_ros.models import MODELS, REFINERS, build_model, get_spec

    if seed is not None:
        torch.manual_seed(seed)
    family = get_spec(model, {**MODELS, **REFINERS}).family
    if family == "lingbot":
        from defm_ros.models.lingbot import build_lingbot

        return save_lingbot(build_lingbot(config).state_dict(), config, path)
    if family == "theia":
        return save_theia(build_model(model).state_dict(), path)
    return save_defm(build_model(model).state_dict(), path)
