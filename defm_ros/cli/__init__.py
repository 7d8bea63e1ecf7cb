"""`defm-ros`: the offline jobs. Each verb is a module with add_arguments(parser) and main(args) -> int."""

from __future__ import annotations

import argparse
import logging
import os
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


EXIT_CODES = """exit codes: 0 done; 2 the input is wrong (arguments, paths, files, checkpoints), said in one line
before any slow work; 1 the job failed while running (extract: a bag that cannot be read); 130 interrupted;
141 output pipe closed (as `defm-ros info | head`)."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="defm-ros", description="DeFM depth features: offline tools.", epilog=EXIT_CODES,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=Parser)
    for verb, (mod, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=(mod.__doc__ or help_text).strip())
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..models.weights import CheckpointError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    CheckpointError.syntax = staticmethod(lambda name: f"--{name.replace('_', '-')} FILE")
    try:
        code = int(args._main(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is handled below and not at interpreter exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except (CliError, CheckpointError, FileNotFoundError, ValueError) as exc:  # what the user gave is wrong
        print(f"defm-ros {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:  # the library's typed failures while running
        print(f"defm-ros {args.verb}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
