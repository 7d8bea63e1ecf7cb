"""List the model zoo, or print the stream description (the ~/features/info payload) of one model
or of an exported ONNX file (its sidecar)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..models import MODELS, REFINERS, ModelSpec
from ..models.weights import models_dir
from .common import CliError, size_type


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", metavar="MODEL|FILE.onnx",
                   help="describe this model as the node would publish it (random weights unless --weights), "
                        "or an exported ONNX file")
    p.add_argument("--weights", default=None, help="checkpoint to describe (default: random weights)")
    p.add_argument("--size", type=size_type, default=None, help="input size N or HxW (default: the model's)")


def _where(spec: ModelSpec, folder: Path) -> str:
    """The columns every table ends with: licence, Hub repo (the file's name in it: models.registry), whether the
    checkpoint is in the models/ folder."""
    have = "yes" if (folder / spec.local_file).is_file() else "-"
    return f"{spec.license.split(' (')[0]:<29} {spec.hub_repo:<45} {have}"


def print_zoo() -> None:
    """Every model and refiner, with its licence and Hub id."""
    folder, tail = models_dir(), f"{'licence':<29} {'Hub repo':<45} checkpoint"
    print(f"{'model':<22} {'family':<13} {'input':<6} {'params':>7}  {'cls':>5}  {'dense':>5}  {tail} in {folder}")
    for s in MODELS.values():
        print(f"{s.name:<22} {s.family:<13} {s.modality:<6} {s.params_m:>6.1f}M  {s.cls_dim:>5}  {s.dense_dim:>5}  "
              f"{_where(s, folder)}")
    print(f"\n{'refiner (refine:=lingbot)':<27} {'params':>7}  {tail}")
    for s in REFINERS.values():
        print(f"{s.name:<27} {s.params_m:>6.1f}M  {_where(s, folder)}")


def main(args: argparse.Namespace) -> int:
    if args.target is None:
        print_zoo()
        return 0
    if args.target.endswith(".onnx"):
        from ..backends.onnx_file import read_sidecar

        print(json.dumps(read_sidecar(args.target), indent=1, sort_keys=True))
        return 0
    if args.target.endswith((".pth", ".pt", ".safetensors")):
        raise CliError(f"{args.target} is a checkpoint; info takes a model name or an exported .onnx file: "
                       f"`defm-ros info MODEL --weights {args.target}` checks it against MODEL")
    if args.target not in MODELS:
        raise CliError(f"unknown model {args.target!r}; choose one of: {', '.join(MODELS)}")
    from ..encoder import Encoder

    enc = Encoder(args.target, weights=args.weights or "random", input_size=args.size)
    print(enc.info_obj.to_json())
    return 0
