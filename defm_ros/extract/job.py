"""extract_bag: one recording in, feature bag and/or dataset out. The unit of work for fleets.

It checks the options, chooses the bag's topics and opens the outputs (sinks.py), under guards.py's lock; run.py
reads, batches, encodes and writes, and result.py says what it did."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import DEFAULT_COMPRESSION, DEFAULT_DEPTH_SCALE, DEFAULT_DTYPE, DEFAULT_MODEL, OUTPUT_DTYPES, check_choice
from ..models import get_spec
from .guards import output_lock
from .lerobot import LeRobotOptions, episode_key, open_episode, pending, staging, write_episode
from .result import ExtractResult
from .run import Outputs, run
from .sinks import FeatureBag, FeatureDataset
from .source import BagReadError, BagSource, TopicInfo, camera_info_topic, find_topics, pair_topics


def output_name(bag: str | Path) -> str:
    """recording.bag / recording.mcap / recording/ -> 'recording' (outputs: recording_features/ ...)."""
    p = Path(bag)
    return p.stem if p.suffix in (".bag", ".mcap", ".db3") else p.name


def output_dirs(bags: Sequence[str | Path], out: Path) -> list[Path]:
    """Where each bag's outputs go: below `out`, its folder's path relative to the bags' common folder,
    so that robot1/run.mcap and robot2/run.mcap do not collide (bags of one folder go to `out` itself)."""
    parents = [Path(b).resolve().parent for b in bags]
    root = Path(os.path.commonpath(parents)) if parents else Path()
    return [Path(out) / p.relative_to(root) for p in parents]


def build_encoder(**options: Any) -> Any:
    """An Encoder from CLI-style options; random weights are seeded so resumed runs agree."""
    import torch

    from ..encoder import Encoder

    opts = {k: v for k, v in options.items() if v is not None}
    if str(opts.get("weights")) == "random":
        torch.manual_seed(0)
    return Encoder(**opts)


def fingerprint(info: dict[str, Any], dtype: str, depth_scale: float, refiner: Any = None,
                points: bool = False) -> dict[str, Any]:
    """What must match for features of two runs to belong in one output (device may differ)."""
    refined = None if refiner is None else {k: refiner.info[k] for k in ("model", "checkpoint_sha256", "num_tokens")}
    if points:
        refined = {**refined, "points": True}
    return {"model": info["model"], "modality": info["modality"], "refined_by": refined,
            "checkpoint_sha256": info["checkpoint_sha256"],
            "random_weights": info["random_weights"], "input_size": list(info["input_size"]),
            "dense_level": info["dense_level"], "depth_mode": info["depth_mode"],
            "precision": info["precision"], "dtype": dtype, "depth_scale": depth_scale}


def extract_bag(bag: str | Path, out: str | Path, *, encoder: Any = None, topics: list[str] | None = None,
                write_bag: bool = True, dataset: bool = False, batch: int = 8, dtype: str = DEFAULT_DTYPE,
                depth_scale: float = DEFAULT_DEPTH_SCALE, resume: bool = False, overwrite: bool = False, limit: int = 0,
                segment_frames: int = 1000, compression: str = DEFAULT_COMPRESSION, chunk_frames: int = 256,
                progress: bool = True, on_batch: Callable[[ExtractResult], None] | None = None, refiner: Any = None,
                prefetch: bool = True, points: bool = False, lerobot: LeRobotOptions | None = None,
                **encoder_options: Any) -> ExtractResult:
    """Encode every frame of one bag's topics of the model's modality (depth for DeFM, colour for Theia);
    write `<out>/<name>_features/` (rosbag2, mcap) and/or
    `<out>/<name>_dataset/` (chunked .npz). Returns an ExtractResult; raises ExtractInterrupted
    (a KeyboardInterrupt) on Ctrl-C after closing the outputs, BagReadError for an unreadable bag.

    `encoder`: an Encoder to reuse (a worker that processes many bags); otherwise one is built from
    `encoder_options` (the Encoder's parameters: model, weights, backend, device, input_size, ...).
    `resume`: keep what the outputs already hold and add only the missing frames.
    `limit`: stop after this many newly written frames (partial output; resume continues).
    `on_batch`: called after each batch is written (progress hooks; may raise KeyboardInterrupt).
    `compression`: the feature bag's mcap chunks, "none" or "zstd" (smaller, costs write time; see
    bench/bench_feature_bag.py).
    `refiner`: a Refiner (LingBot-Depth): each depth topic is paired with its camera's colour topic by
    stamp, refined, and the features are the depth model's on the refined depth; the refined depth and
    mask are written too (<topic>/depth_refined, _mask; dataset fields depth_refined, depth_refined_mask), and
    the camera's camera_info (camera_info_topic), paired by stamp too, with the refined depth's header
    (<topic>/depth_refined/camera_info). `points`: also the refined depth's points, back-projected with that
    camera_info's K (<topic>/depth_refined/points, an organised PointCloud2), as the node's publish_points.
    An RGB-D model (lingbot_rgbd_vitl14) pairs the same way and encodes the pairs.
    `prefetch`: read and decode on a background thread, up to two batches ahead of the forward pass
    (bench/bench_extract.py); False reads on the calling thread. The outputs are the same.
    `lerobot`: also stage the bag's episode of a LeRobot dataset (lerobot.py, whose `assemble` adds it).
    """
    _check_options(write_bag, dataset or lerobot is not None, dtype, batch, segment_frames, chunk_frames, limit,
                   encoder_options)
    bag, out = Path(bag), Path(out)
    name, result = output_name(bag), ExtractResult(bag=str(bag))
    out.mkdir(parents=True, exist_ok=True)
    model = encoder.info["model"] if encoder is not None else encoder_options.get("model") or DEFAULT_MODEL
    modality = _modality(model, refiner, points)
    paired = refiner is not None or modality == "rgbd"
    with output_lock(out / ".locks" / f"{name}.lock"), BagSource(bag) as source:
        found, depth_of = _choose_topics(source, topics, model, modality, paired, result)
        if not found:
            what = "aligned depth + colour topic pairs" if paired else f"{modality} topics"
            return _finished(result, f"no {what} in this bag (see `defm-ros extract --help`)")
        result.frames_total = sum(t.count or 0 for t in found)
        result.bag_duration_s = (span[1] - span[0]) / 1e9 if (span := source.time_range) else 0.0
        enc = encoder if encoder is not None else build_encoder(**encoder_options)
        info = enc.info if refiner is None else {**enc.info, "refined_by": refiner.info}
        fp = fingerprint(info, dtype, depth_scale, refiner, points)
        info_of = {} if refiner is None else _camera_infos(source, depth_of, points, result)
        key, store = _stores(source, lerobot, out, name, dataset, fp, result)
        if not (write_bag or store):
            return _finished(result)
        outputs = _open_outputs(out, name, bag, info, fp, result, write_bag=write_bag, dataset=store, dtype=dtype,
                                segment_frames=segment_frames, compression=compression, chunk_frames=chunk_frames,
                                overwrite=overwrite, resume=resume, dense=dataset or bool(lerobot and lerobot.dense))
        run(source, enc, refiner, outputs, result, batch=batch, depth_scale=depth_scale, limit=limit, progress=progress,
            on_batch=on_batch, depth_of=depth_of, prefetch=prefetch, info_of=info_of, points=points)
        if key is not None and result.complete:
            result.notes.append(write_episode(source, store, lerobot, key))
    return result


def _modality(model: str, refiner: Any, points: bool) -> str:
    """The model's input modality, once the refiner and points fit it: refinement feeds a depth model, and points
    are the refined depth's."""
    modality = get_spec(model).modality
    if refiner is not None and modality != "depth":
        raise ValueError(f"refinement feeds a depth model; {model} takes {modality}")
    if points and refiner is None:
        raise ValueError("points are the refined depth's: they need a refiner (--points needs --refine)")
    return modality


def _finished(result: ExtractResult, note: str | None = None) -> ExtractResult:
    """A bag with nothing (more) to write: complete, with why."""
    if note:
        result.notes.append(note)
    result.complete = True
    return result


def _stores(source: BagSource, lerobot: LeRobotOptions | None, out: Path, name: str, dataset: bool,
            fp: dict[str, Any], result: ExtractResult) -> tuple[str | None, Path | None]:
    """The bag's LeRobot episode (its key) when still to be made, else None (noted: staged or in the dataset);
    and where its frames go: the --dataset, else the episode's own store, else nowhere."""
    key = None
    if lerobot is not None:
        open_episode(source, lerobot, fp)
        result.outputs["lerobot"] = str(lerobot.root)
        if pending(lerobot, key := episode_key(out, name, lerobot.root)):
            return key, out / f"{name}_dataset" if dataset else staging(lerobot.root, key) / "frames"
        result.notes.append(f"its LeRobot episode is already made ({lerobot.root})")
        key = None
    return key, out / f"{name}_dataset" if dataset else None


def _check_options(write_bag: bool, dataset: bool, dtype: str, batch: int, segment_frames: int, chunk_frames: int,
                   limit: int, encoder_options: dict[str, Any]) -> None:
    """Refuse options that cannot work before the bag, the outputs or a model are touched."""
    if not (write_bag or dataset):
        raise ValueError("nothing to write: enable the feature bag and/or the dataset")
    check_choice("dtype", dtype, OUTPUT_DTYPES)
    if batch < 1 or segment_frames < 1 or chunk_frames < 1 or limit < 0:
        raise ValueError("batch, segment_frames and chunk_frames must be >= 1 and limit >= 0")
    if encoder_options:
        _check_encoder_options(encoder_options)


def _check_encoder_options(options: dict[str, Any]) -> None:
    """The Encoder's own parameters are the options: a misspelt one is refused here, not after the bag opened."""
    import inspect

    from ..encoder import Encoder

    named = [n for n, p in inspect.signature(Encoder).parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    if unknown := set(options) - set(named):
        raise TypeError(f"unknown options {sorted(unknown)}")


def _choose_topics(source: BagSource, topics: list[str] | None, model: str, modality: str, paired: bool,
                   result: ExtractResult) -> tuple[list[TopicInfo], dict[str, str]]:
    """The topics to extract, among `topics` (None: all): the model's modality, or depth topics paired with their
    camera's colour topic when `paired`. Returns them and colour topic -> depth topic; the bag's notes and the
    topics' names go to `result`. BagReadError for a named topic the bag lacks or that carries no input of the
    model."""
    result.notes += source.notes
    result.source_truncated = source.salvaged
    chosen = None if topics is None else [t for t in source.topics if t.name in topics]
    if chosen is not None and (missing := sorted(set(topics) - {t.name for t in chosen})):
        raise BagReadError(f"{source.path}: no topic(s) {missing}; it has {sorted(t.name for t in source.topics)}")
    pairs: list[tuple[TopicInfo, TopicInfo]] = []
    if paired:
        pairs, notes = pair_topics(find_topics(source, "depth", chosen), find_topics(source, "color", chosen))
        result.notes += notes
        found = [d for d, _ in pairs]
    else:
        found = find_topics(source, modality, chosen)
        if chosen is not None and (empty := sorted({t.name for t in chosen} - {t.name for t in found})):
            raise BagReadError(f"{source.path}: {', '.join(empty)} carries no {modality} images, which {model} takes "
                               f"({'; '.join(f'{t.name}: {t.msgtype}' for t in chosen if t.name in empty)})")
    result.topics = [t.name for t in found]
    return found, {c.name: d.name for d, c in pairs}


def _camera_infos(source: BagSource, depth_of: dict[str, str], points: bool, result: ExtractResult) -> dict[str, str]:
    """camera_info topic -> its depth topic, for each refined pair whose camera has one; a note for each without
    (its refined depth is written without camera_info, and without points)."""
    info_of = {}
    for color, depth in depth_of.items():
        if (info := camera_info_topic(source, color, depth)) is not None:
            info_of[info] = depth
        else:
            result.notes.append(f"{depth}: no camera_info beside {color} or it: its refined depth is written without "
                                f"camera_info{' and points' if points else ''}")
    return info_of


def _open_outputs(out: Path, name: str, bag: Path, info: dict[str, Any], fp: dict[str, Any], result: ExtractResult,
                  *, write_bag: bool, dataset: Path | None, dtype: str, segment_frames: int, compression: str,
                  chunk_frames: int, overwrite: bool, resume: bool, dense: bool) -> Outputs:
    """The feature bag and/or the per-frame dataset at `dataset` (with `dense` maps or not), removed first with
    `overwrite`, opened with the frames they hold (resume: kept; otherwise an existing one is refused); their notes
    and paths go to `result` (a dataset of the LeRobot episode's own, below the LeRobot dataset, goes unnamed)."""
    fbag = (FeatureBag(out / f"{name}_features", info, fp, str(bag), dtype, segment_frames, compression)
            if write_bag else None)
    ds = FeatureDataset(dataset, info, fp, str(bag), dtype, chunk_frames, dense) if dataset else None
    sinks = [s for s in (fbag, ds) if s is not None]
    if overwrite:
        for s in sinks:
            if s.path.exists():
                shutil.rmtree(s.path)
    own = ds is not None and ds.path == out / f"{name}_dataset"
    outputs = Outputs(fbag, ds, None if fbag is None else fbag.open(resume),
                      None if ds is None else ds.open(resume or not own))
    for s in sinks:
        result.notes += s.notes
        if s is fbag or own:
            result.outputs["bag" if s is fbag else "dataset"] = str(s.path)
    return outputs
