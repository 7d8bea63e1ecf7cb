"""Encode every frame of recorded bags (rosbag2 sqlite3/mcap, ROS 1 .bag) into features: the depth
topics for a DeFM model, the colour topics for a Theia model (found by their messages).

For each BAG, writes OUT/<name>_features/ (a rosbag2 mcap bag with <topic>/features/dense, /cls and
/info at the original timestamps) and, with --dataset, OUT/<name>_dataset/ (chunked .npz files for
policy training; read them with defm_ros.extract.load_dataset) and, with --lerobot, OUT/lerobot/ (one LeRobot
v3.0 dataset, an episode per bag, robot state and actions aligned). Ctrl-C leaves every output readable
and flagged partial; --resume adds only the frames still missing. Exit codes: 0 done, 1 a bag could
not be read or processed, 2 usage error, 130 interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from ..config import (
    BACKENDS,
    BAG_COMPRESSIONS,
    DEFAULT_BACKEND,
    DEFAULT_COMPRESSION,
    DEFAULT_DEPTH_SCALE,
    DEFAULT_DTYPE,
    DEFAULT_REFINER,
    DEFAULT_TOKENS,
    OUTPUT_DTYPES,
    REFINE,
)
from ..models import REFINERS, get_spec
from .common import CliError, add_device_option, add_model_options, encoder_options, positive_int
from .lerobot import add_arguments as add_lerobot_arguments
from .lerobot import assemble, lerobot_options

log = logging.getLogger("defm_ros")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bags", nargs="+", type=Path, metavar="BAG",
                   help="rosbag2 folders, .mcap/.db3 files or ROS 1 .bag files")
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--topic", "-t", action="append", dest="topics", metavar="TOPIC",
                   help="topic to encode (repeatable; default: every topic of the model's modality found)")
    p.add_argument("--dataset", action="store_true", help="also write OUT/<name>_dataset/ for training")
    p.add_argument("--no-bag", action="store_true", help="write no feature bag (use with --dataset or --lerobot)")
    p.add_argument("--batch", type=positive_int, default=8, help="frames per forward pass (default 8)")
    p.add_argument("--dtype", choices=list(OUTPUT_DTYPES), default=DEFAULT_DTYPE,
                   help="feature dtype in the outputs (float16: 16FC<C> messages, half the size)")
    p.add_argument("--depth-scale", type=float, default=DEFAULT_DEPTH_SCALE,
                   help=f"metres per unit of 16UC1/mono16 depth (default {DEFAULT_DEPTH_SCALE}: millimetres)")
    p.add_argument("--compression", choices=list(BAG_COMPRESSIONS), default=DEFAULT_COMPRESSION,
                   help="feature bag mcap chunk compression (zstd: smaller files, slower writes)")
    p.add_argument("--resume", action="store_true", help="continue existing outputs, skipping frames they hold")
    p.add_argument("--overwrite", action="store_true", help="delete existing outputs first")
    p.add_argument("--limit", type=int, default=0, help="stop each bag after N new frames (0: all)")
    p.add_argument("--segment-frames", type=positive_int, default=1000,
                   help="frames per feature-bag file; a killed run loses at most one (default 1000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none either when stderr is not a "
                   "terminal)")
    add_model_options(p)
    add_device_option(p)
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=list(BACKENDS))
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run one task per bag on a Ray cluster: auto (the running cluster, else a local one) or "
                        "its address; encoders live in one actor per GPU, else CPU actors (pip install "
                        "'defm_ros[ray]')")
    p.add_argument("--ray-threads", type=positive_int, default=1, help="torch threads per CPU actor (default 1)")
    p.add_argument("--refine", default="none", choices=list(REFINE),
                   help="refine each depth topic from its camera's colour topic (paired by stamp) before a DeFM "
                        "model; writes the refined depth too")
    p.add_argument("--refine-model", default=DEFAULT_REFINER, choices=list(REFINERS), metavar="NAME",
                   help=f"refiner (default {DEFAULT_REFINER})")
    p.add_argument("--refine-weights", default=None, help="refiner model.pt (default: models/, HF cache, Hub)")
    p.add_argument("--refine-tokens", type=positive_int, default=DEFAULT_TOKENS,
                   help=f"refiner patch tokens (default {DEFAULT_TOKENS})")
    p.add_argument("--points", action="store_true",
                   help="with --refine: also write <topic>/depth_refined/points (PointCloud2), back-projected with "
                        "the camera's camera_info (written as <topic>/depth_refined/camera_info with --refine)")
    add_lerobot_arguments(p)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    from ..extract import output_dirs, output_name

    if args.resume and args.overwrite:
        raise CliError("--resume and --overwrite exclude each other")
    if args.no_bag and not (args.dataset or args.lerobot):
        raise CliError("--no-bag writes nothing unless --dataset or --lerobot is given")
    if args.limit < 0:
        raise CliError("--limit must be >= 0")
    if args.points and args.refine == "none":
        raise CliError("--points writes the refined depth's points: it needs --refine")
    from ..extract.source import BagReadError, check_bag_path

    names: dict[Path, Path] = {}
    args.outs = output_dirs(args.bags, args.out)  # robot1/run.mcap and robot2/run.mcap do not collide
    for bag, out in zip(args.bags, args.outs, strict=True):
        try:
            check_bag_path(bag)  # before the model loads: a wrong path fails at once
        except BagReadError as exc:
            raise CliError(str(exc)) from None
        other = names.setdefault(out / output_name(bag), bag)
        if other != bag:
            raise CliError(f"{other} and {bag} would write the same outputs ({out / output_name(bag)}_*); "
                           f"extract them into different --out folders")
    paired = args.refine != "none" or get_spec(args.model).modality == "rgbd"
    args.lerobot_options = lerobot_options(args, "depth" if paired else get_spec(args.model).modality)
    if args.ray is not None:
        return _extract_on_ray(args)
    in_main = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None  # stop = Ctrl-C
    try:
        return _extract_all(args)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_handler)


def _bars(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal: in a log file their redraws interleave with the result lines."""
    return not args.no_progress and sys.stderr.isatty()


def _job_options(args: argparse.Namespace) -> dict:
    """extract_bag's options from the command line (the encoder's are separate)."""
    return dict(topics=args.topics, write_bag=not args.no_bag, dataset=args.dataset, batch=args.batch,
                dtype=args.dtype, depth_scale=args.depth_scale, resume=args.resume, overwrite=args.overwrite,
                limit=args.limit, segment_frames=args.segment_frames, compression=args.compression, points=args.points,
                lerobot=args.lerobot_options)


def _encoder_options(args: argparse.Namespace) -> dict:
    return {**encoder_options(args), "backend": args.backend}


def _refiner_options(args: argparse.Namespace) -> dict | None:
    if args.refine == "none":
        return None
    return dict(model=args.refine_model, weights=args.refine_weights, device=args.device, precision=args.precision,
                num_tokens=args.refine_tokens)


def _extract_on_ray(args: argparse.Namespace) -> int:
    """--ray: one task per bag on the cluster's encoder actors (extract/fleet.py)."""
    try:
        import ray  # noqa: F401 - the optional extra
    except ImportError as exc:
        raise CliError(f"--ray needs Ray: pip install 'defm_ros[ray]' ({exc})") from None
    from ..extract.fleet import extract_fleet, report

    results = extract_fleet(args.bags, args.out, address=args.ray, encoder_options=_encoder_options(args),
                            refiner_options=_refiner_options(args), threads=args.ray_threads,
                            progress=_bars(args), **_job_options(args))
    print(report(args.bags, results))
    failed = 0 if args.lerobot_options is None else assemble(args.lerobot_options, args.bags, args.outs)  # in order
    return 0 if all(getattr(r, "complete", False) or getattr(r, "limited", False) for r in results) and not failed \
        else 1


def _extract_all(args: argparse.Namespace) -> int:
    from ..extract import BagReadError, ExtractInterrupted, OutputMismatchError, build_encoder, extract_bag

    encoder = build_encoder(**_encoder_options(args))
    refiner = None
    if (refine := _refiner_options(args)) is not None:
        from ..refiner import Refiner

        refiner = Refiner(**refine)
        print(f"refining depth with {args.refine_model} ({args.refine_tokens} tokens) before the features")
    info = encoder.info
    print(f"{info['model']} on {info['device']} ({info['precision']}), input {tuple(info['input_size'])}, "
          f"dense {info['dense_channels']}x{info['dense_size'][0]}x{info['dense_size'][1]}, "
          f"cls {info['cls_channels']}; {len(args.bags)} bag(s) -> {args.out}/")
    if info["random_weights"]:
        print("RANDOM WEIGHTS: the features are meaningless (smoke runs only)")
    failed, results = 0, []
    for bag, out in zip(args.bags, args.outs, strict=True):
        try:
            result = extract_bag(bag, out, encoder=encoder, progress=_bars(args), refiner=refiner,
                                 **_job_options(args))
        except ExtractInterrupted as exc:
            print(exc.result.summary())
            print("interrupted: outputs closed and flagged partial; rerun with --resume to continue",
                  file=sys.stderr)
            return 130
        except (FileExistsError, OutputMismatchError) as exc:
            raise CliError(str(exc)) from None
        except BagReadError as exc:
            print(f"defm-ros extract: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        results.append(result)
        print(result.summary())
        if args.lerobot_options is not None:
            failed += assemble(args.lerobot_options, [bag], [out])
        if not result.complete and not result.limited:
            failed += 1
    if len(results) > 1:
        written = sum(r.frames_written for r in results)
        elapsed = sum(r.elapsed_s for r in results)
        print(f"total: {written} frames in {elapsed:.1f} s ({written / elapsed if elapsed else 0:.1f} frames/s), "
              f"{sum(sum(r.rejected.values()) for r in results)} malformed message(s) skipped")
    if results and not any(r.topics for r in results) and not failed:
        raise CliError(f"no {info['modality']} topics found for {info['model']} (pass --topic to choose one)")
    return 1 if failed else 0
