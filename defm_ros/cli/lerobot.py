"""`extract --lerobot`'s options: one LeRobot v3.0 dataset, OUT/lerobot/, of every bag (extract/lerobot.py).
Everything here is checked before the model loads: a state/action topic of a type no reader takes is a usage
error, and --fps defaults to the first camera topic's median rate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import CliError, positive_int

if TYPE_CHECKING:
    from ..extract.lerobot import LeRobotOptions

LEROBOT_ONLY = ("fps", "state", "action", "task", "dense", "camera_keys")  # flags that need --lerobot


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LeRobot dataset", "with --lerobot, OUT/lerobot/ (one episode per bag, in the order "
                             "given): each camera's class token (and with --dense its feature map) and the robot's "
                             "state and commands on one time grid; LeRobotDataset(repo_id, root=OUT/lerobot) loads it")
    g.add_argument("--lerobot", action="store_true", help="write OUT/lerobot/, a LeRobot v3.0 dataset")
    g.add_argument("--fps", type=positive_int, default=None,
                   help="rows per second (default: the first camera topic's median rate, rounded)")
    g.add_argument("--state", action="append", default=None, metavar="TOPIC",  # --help imports no torch: the
                   help="observation.state topic (repeatable, concatenated in order; a topic of a type not "
                        "read is refused, with the types that are)")  # types live in extract/robot_msgs.py
    g.add_argument("--action", action="append", default=None, metavar="TOPIC",
                   help="action topic (repeatable, concatenated in order); the same types as --state")
    g.add_argument("--task", default=None, help="the episodes' task text (default: empty)")
    g.add_argument("--dense", action="store_true", help="also observation.<camera>_features, [C, h, w] in --dtype")
    g.add_argument("--camera-key", action="append", default=None, dest="camera_keys", metavar="TOPIC=NAME",
                   help="name a camera in the columns (default: its topic, slashes to dots: cam.depth)")


def lerobot_options(args: argparse.Namespace, modality: str) -> LeRobotOptions | None:
    """extract_bag's `lerobot` options from the command line (None without --lerobot); CliError for options
    that cannot work. The dataset is refused here if it exists without --resume, removed with --overwrite."""
    from ..extract.lerobot import LeRobotOptions, check_topics, default_fps, prepare
    from ..extract.source import BagReadError

    if not args.lerobot:
        if given := [f"--{k.replace('_', '-')}" for k in LEROBOT_ONLY if getattr(args, k)]:
            raise CliError(f"{', '.join(given)} only apply with --lerobot")
        return None
    keys = [tuple(k.split("=", 1)) for k in args.camera_keys or []]
    if bad := [k[0] for k in keys if len(k) != 2]:
        raise CliError(f"--camera-key takes TOPIC=NAME, not {bad}")
    try:
        fps = args.fps or default_fps(args.bags[0], args.topics, modality)
        options = LeRobotOptions(root=Path(args.out) / "lerobot", fps=fps, state=tuple(args.state or ()),
                                 action=tuple(args.action or ()), task=args.task or "", dense=args.dense,
                                 camera_keys=tuple(keys))
        check_topics(args.bags, options)
        prepare(options.root, args.resume, args.overwrite)
    except (ValueError, BagReadError, FileExistsError) as exc:
        raise CliError(str(exc)) from None
    return options


def assemble(options: LeRobotOptions, bags: list[Path], outs: list[Path]) -> int:
    """Add the staged episodes of `bags` to the dataset, in that order, and say so; returns how many could not
    join it (an error for those bags alone)."""
    from ..extract import output_name
    from ..extract.lerobot import assemble as add
    from ..extract.lerobot import episode_key

    added, failed = add(options, [episode_key(o, output_name(b), options.root) for b, o in zip(bags, outs,
                                                                                              strict=True)])
    for line in added:
        print(line)
    for line in failed:
        print(f"defm-ros extract: error: {line}", file=sys.stderr)
    return len(failed)
