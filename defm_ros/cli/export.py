"""Export a model to ONNX, check it against torch on real frames, and write its sidecar JSON.

With --camera-size the file takes the raw input of that size (depth in metres, or uint8 RGB for Theia)
with the preprocessing in the graph (one ONNX Runtime call per frame); without, it takes the
normalized (B, 3, H, W) tensor. Outputs are `cls` and `dense`, float32, whatever the precision.
The sidecar <file>.json is what the node publishes on ~/features/info; keep it next to the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import DEFAULT_DEPTH_MODE, DEPTH_MODES, ONNX_PRECISIONS
from .common import CliError, add_model_options, encoder_options, model_size, positive_int, size_type


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p, precisions=ONNX_PRECISIONS)  # weights and activations; inputs and outputs stay float32
    p.add_argument("--camera-size", type=size_type, default=None, metavar="HxW",
                   help="put the normalization in the graph for raw depth of this size, e.g. 480x640")
    p.add_argument("--depth-mode", default=DEFAULT_DEPTH_MODE, choices=list(DEPTH_MODES),
                   help="normalization put in the graph (with --camera-size)")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="fix the batch size (TensorRT builds one engine per shape); default: any batch")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="output .onnx (default <model>_<HxW>[_cam<HxW>]_<precision>.onnx here)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs torch comparison")


def _default_name(args: argparse.Namespace) -> Path:
    cam = f"_cam{args.camera_size[0]}x{args.camera_size[1]}" if args.camera_size else ""
    return Path(f"{args.model}_{args.size[0]}x{args.size[1]}{cam}_{args.precision}.onnx")


def main(args: argparse.Namespace) -> int:
    from ..backends.onnx_file import ExportError
    from ..encoder import Encoder

    args.size = model_size(args)
    out = args.output or _default_name(args)
    if out.suffix != ".onnx":
        raise CliError(f"output must end in .onnx, got {out}")
    # exports from the CPU weights (no backend needed); --precision is the file's, not the Encoder's
    opts = {k: v for k, v in encoder_options(args).items() if k != "precision"}
    enc = Encoder(**opts, depth_mode=args.depth_mode, lazy=True)
    try:
        side = enc.export_onnx(out, camera_size=args.camera_size, batch=args.batch,
                               precision=args.precision, check=not args.no_check)
    except ExportError as exc:
        raise CliError(str(exc)) from exc
    onnx = side["onnx"]
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) and {out}.json")
    print(f"  input  {onnx['input_name']} {onnx['input_shape']} {onnx['input_dtype']} ({onnx['input']})")
    print(f"  output cls [{onnx['input_shape'][0]}, {side['cls_channels']}], dense [.., {side['dense_channels']}, "
          f"{side['padded_size'][0] // side['stride']}, {side['padded_size'][1] // side['stride']}] "
          f"(crop to {side['dense_size'][0]}x{side['dense_size'][1]})")
    check = onnx["check"]
    if check:
        print(f"  check  max |onnx - torch|: cls {check['max_abs_err_cls']:.2e}, dense {check['max_abs_err_dense']:.2e}"
              f" (tolerance {check['tolerance_dense']:.1e}) on {len(check['frames'])} frame(s)")
    for w in side["warnings"]:
        print(f"  WARNING {w}")
    return 0
