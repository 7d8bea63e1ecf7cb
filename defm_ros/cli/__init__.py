"""`defm-ros`: the offline jobs. Each verb is a module with add_arguments(parser) and main(args) -> int."""

from __future__ import annotations

import argparse
import logging
import sys

from . import bench, demo, export, extract, info
from .common import CliError, Parser

VERBS = {
    "info": (info, "list the model zoo, or describe one model / exported ONNX file"),
    "demo": (demo, "encode real depth frames and write PCA feature images (the main job)"),
    "export": (export, "export a model (optionally with normalization) to ONNX and check it"),
    "bench": (bench, "time preprocessing, inference and end-to-end per backend, side by side"),
    "extract": (extract, "encode recorded bags into feature bags and training datasets (resumable)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="defm-ros", description="DeFM depth features: offline tools.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=Parser)
    for verb, (mod, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=(mod.__doc__ or help_text).strip())
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except CliError as exc:
        print(f"defm-ros {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, OSError) as exc:  # the library's typed errors are these
        print(f"defm-ros {args.verb}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
