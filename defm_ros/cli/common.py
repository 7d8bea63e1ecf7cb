"""argparse types and options shared by verbs; choices and defaults come from defm_ros.config."""

from __future__ import annotations

import argparse

from ..config import (
    DEFAULT_DENSE_LEVEL,
    DEFAULT_DEVICE,
    DEFAULT_INPUT_SIZE,
    DEFAULT_MODEL,
    DEFAULT_PRECISION,
    DENSE_LEVELS,
    PRECISIONS,
    check_device,
    parse_size,
)
from ..models import MODELS


class CliError(Exception):
    """An expected failure (the user's input is wrong): printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (`defm-ros VERB: error: ...; see --help`), exit code 2."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def size_type(text: str) -> tuple[int, int]:
    """'224' or '224x308' (H x W), by the one input-size rule (config.check_input_size)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def device_type(text: str) -> str:
    try:
        return check_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_from(minimum: int, expected: str):
    """An argparse type: an int >= `minimum`, else a usage error that says `expected`."""
    def parse(text: str) -> int:
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = _int_from(1, "a positive integer")
count_type = _int_from(0, "a count >= 0 (0: all)")  # 0 means "no limit"


def output_file(text: str) -> str:
    """A file to write at the end of a long job, checked now so that the results are not lost then."""
    import os
    from pathlib import Path

    path = Path(text).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name a file")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{folder}: no such folder")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text}: not writable")
    return str(path)


def progress(iterable=None, **kwargs):
    """tqdm, shown only on a terminal: in a log file a bar's redraws interleave with the result lines."""
    import sys

    from tqdm import tqdm

    return tqdm(iterable, disable=not sys.stderr.isatty(), **kwargs)


def add_model_options(p: argparse.ArgumentParser, precisions: tuple[str, ...] = PRECISIONS) -> None:
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, choices=list(MODELS), metavar="NAME",
                   help=f"model variant (default {DEFAULT_MODEL}; see `defm-ros info`)")
    p.add_argument("--weights", "-w", default=None,
                   help="checkpoint .pth (default: models/, HF cache, Hub), or 'random' for smoke runs")
    p.add_argument("--size", type=size_type, default=None,
                   help=f"network input size N or HxW (default: the model's; {DEFAULT_INPUT_SIZE[0]} for DeFM, Theia)")
    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=list(precisions))
    p.add_argument("--dense-level", default=DEFAULT_DENSE_LEVEL, choices=list(DENSE_LEVELS), help="CNN dense level")


def encoder_options(args: argparse.Namespace) -> dict:
    """Encoder(**encoder_options(args), ...): what add_model_options and add_device_option read, by the
    Encoder's own names (a verb without --device leaves the Encoder's default)."""
    opts = dict(model=args.model, weights=args.weights, input_size=args.size, precision=args.precision,
                dense_level=args.dense_level)
    if hasattr(args, "device"):
        opts["device"] = args.device
    return opts


def model_size(args: argparse.Namespace) -> tuple[int, int]:
    """--size, or the model's default input size."""
    from ..models import get_spec

    return args.size or get_spec(args.model).default_size


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=device_type, default=DEFAULT_DEVICE,
                   help=f"cpu, cuda or cuda:N (default {DEFAULT_DEVICE})")
