"""argparse types and options shared by verbs."""

from __future__ import annotations

import argparse

from ..models import MODELS


def size_type(text: str) -> tuple[int, int]:
    """'224' or '224x308' (H x W)."""
    try:
        parts = [int(p) for p in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 14:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with each side >= 14, got {text!r}")
    return parts[0], parts[1]


def add_model_options(p: argparse.ArgumentParser, default_model: str = "defm_resnet18") -> None:
    p.add_argument("--model", "-m", default=default_model, choices=list(MODELS), metavar="NAME",
                   help=f"model variant (default {default_model}; see `defm-ros info`)")
    p.add_argument("--weights", "-w", default=None,
                   help="checkpoint .pth (default: models/, HF cache, Hub), or 'random' for smoke runs")
    p.add_argument("--size", type=size_type, default=(224, 224), help="input size N or HxW (default 224)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--dense-level", default="P4", choices=["P3", "P4", "P5"], help="CNN dense level")
