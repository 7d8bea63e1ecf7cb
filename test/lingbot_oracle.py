"""LingBot-Depth's upstream model code (../shared/oracles/lingbot_depth, package `mdm`) as a test oracle,
with a small config that runs in seconds on a CPU (the oracle README's), and checkpoints written in the
official model.pt layout."""

from __future__ import annotations

import sys

import pytest
import torch

from defm_ros.sample_data import data_root

from .lingbot_config import SMALL  # noqa: F401 - the config the tests share

ROOT = data_root()
ORACLE = ROOT.parent / "oracles" / "lingbot_depth" if ROOT else None
if ORACLE is None or not (ORACLE / "oracle.py").is_file():
    pytest.skip("the LingBot-Depth oracle (../shared/oracles/lingbot_depth) is not here", allow_module_level=True)
sys.path.insert(0, str(ORACLE))
from oracle import MDMModel  # noqa: E402


def oracle(config: dict = SMALL, seed: int = 0) -> MDMModel:
    """Upstream's model, every parameter perturbed so that norms and layer scales are not at their init."""
    torch.manual_seed(seed)
    model = MDMModel(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def save_official(model: MDMModel, config: dict, path, extra: dict | None = None) -> None:
    """The published model.pt layout: {"model_config": MDMModel kwargs, "model": state dict}."""
    torch.save({"model_config": config, "model": {**model.state_dict(), **(extra or {})}}, path)
