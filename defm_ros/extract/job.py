"""extract_bag: one recording in, feature bag and/or dataset out. The unit of work for fleets.

The events it batches come from reader.py (on a Prefetch thread), its outputs from sinks.py, kept whole by
guards.py; result.py says what it did."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DEFAULT_COMPRESSION, DEFAULT_DTYPE, DEFAULT_MODEL, OUTPUT_DTYPES, check_choice
from ..inputs import INPUTS, ShapeBatches, StampPairer
from ..models import get_spec
from .guards import output_lock, shielded
from .prefetch import Prefetch
from .reader import Frame, Skip, read_events
from .result import ExtractInterrupted, ExtractResult
from .sinks import FeatureBag, FeatureDataset, Key
from .source import BagReadError, BagSource, TopicInfo, find_topics, pair_topics

log = logging.getLogger("defm_ros")
ENCODER_OPTIONS = ("model", "weights", "backend", "device", "input_size", "precision", "dense_level")


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


def fingerprint(info: dict[str, Any], dtype: str, depth_scale: float, refiner: Any = None) -> dict[str, Any]:
    """What must match for features of two runs to belong in one output (device may differ)."""
    refined = None if refiner is None else {k: refiner.info[k] for k in ("model", "checkpoint_sha256", "num_tokens")}
    return {"model": info["model"], "modality": info["modality"], "refined_by": refined,
            "checkpoint_sha256": info["checkpoint_sha256"],
            "random_weights": info["random_weights"], "input_size": list(info["input_size"]),
            "dense_level": info["dense_level"], "depth_mode": info["depth_mode"],
            "precision": info["precision"], "dtype": dtype, "depth_scale": depth_scale}


def extract_bag(
    bag: str | Path,
    out: str | Path,
    *,
    encoder: Any = None,
    topics: list[str] | None = None,
    write_bag: bool = True,
    dataset: bool = False,
    batch: int = 8,
    dtype: str = DEFAULT_DTYPE,
    depth_scale: float = 0.001,
    resume: bool = False,
    overwrite: bool = False,
    limit: int = 0,
    segment_frames: int = 1000,
    compression: str = DEFAULT_COMPRESSION,
    chunk_frames: int = 256,
    progress: bool = True,
    on_batch: Callable[[ExtractResult], None] | None = None,
    refiner: Any = None,
    prefetch: bool = True,
    **encoder_options: Any,
) -> ExtractResult:
    """Encode every frame of one bag's topics of the model's modality (depth for DeFM, colour for Theia);
    write `<out>/<name>_features/` (rosbag2, mcap) and/or
    `<out>/<name>_dataset/` (chunked .npz). Returns an ExtractResult; raises ExtractInterrupted
    (a KeyboardInterrupt) on Ctrl-C after closing the outputs, BagReadError for an unreadable bag.

    `encoder`: an Encoder to reuse (a worker that processes many bags); otherwise one is built from
    `encoder_options` (model, weights, backend, device, input_size, precision, dense_level).
    `resume`: keep what the outputs already hold and add only the missing frames.
    `limit`: stop after this many newly written frames (partial output; resume continues).
    `on_batch`: called after each batch is written (progress hooks; may raise KeyboardInterrupt).
    `compression`: the feature bag's mcap chunks, "none" or "zstd" (smaller, costs write time; see
    bench/bench_feature_bag.py).
    `refiner`: a Refiner (LingBot-Depth): each depth topic is paired with its camera's colour topic by
    stamp, refined, and the features are the depth model's on the refined depth; the refined depth and
    mask are written too (<topic>/depth_refined, _mask; dataset fields depth_refined, depth_refined_mask).
    An RGB-D model (lingbot_rgbd_vitl14) pairs the same way and encodes the pairs.
    `prefetch`: read and decode on a background thread, up to two batches ahead of the forward pass
    (bench/bench_extract.py); False reads on the calling thread. The outputs are the same.
    """
    if not (write_bag or dataset):
        raise ValueError("nothing to write: enable the feature bag and/or the dataset")
    check_choice("dtype", dtype, OUTPUT_DTYPES)
    if batch < 1 or segment_frames < 1 or chunk_frames < 1 or limit < 0:
        raise ValueError("batch, segment_frames and chunk_frames must be >= 1 and limit >= 0")
    if unknown := set(encoder_options) - set(ENCODER_OPTIONS):
        raise TypeError(f"unknown options {sorted(unknown)}")
    bag, out = Path(bag), Path(out)
    name = output_name(bag)
    result = ExtractResult(bag=str(bag))
    out.mkdir(parents=True, exist_ok=True)
    model = encoder.info["model"] if encoder is not None else encoder_options.get("model") or DEFAULT_MODEL
    modality = get_spec(model).modality
    if refiner is not None and modality != "depth":
        raise ValueError(f"refinement feeds a depth model; {model} takes {modality}")
    paired = refiner is not None or modality == "rgbd"
    with output_lock(out / ".locks" / f"{name}.lock"), BagSource(bag) as source:
        result.notes += source.notes
        result.source_truncated = source.salvaged
        chosen = None if topics is None else [t for t in source.topics if t.name in topics]
        if chosen is not None and (missing := sorted(set(topics) - {t.name for t in chosen})):
            raise BagReadError(f"{bag}: no topic(s) {missing}; it has {sorted(t.name for t in source.topics)}")
        pairs: list[tuple[TopicInfo, TopicInfo]] = []
        if paired:
            pairs, notes = pair_topics(find_topics(source, "depth", chosen), find_topics(source, "color", chosen))
            result.notes += notes
            found = [d for d, _ in pairs]
        else:
            found = find_topics(source, modality, chosen)
            if chosen is not None and (empty := sorted({t.name for t in chosen} - {t.name for t in found})):
                raise BagReadError(f"{bag}: {', '.join(empty)} carries no {modality} images, which {model} takes "
                                   f"({'; '.join(f'{t.name}: {t.msgtype}' for t in chosen if t.name in empty)})")
        result.topics = [t.name for t in found]
        if not found:
            what = "aligned depth + colour topic pairs" if paired else f"{modality} topics"
            result.notes.append(f"no {what} in this bag (see `defm-ros extract --help`)")
            result.complete = True
            return result
        result.frames_total = sum(t.count or 0 for t in found)
        span = source.time_range
        result.bag_duration_s = (span[1] - span[0]) / 1e9 if span else 0.0

        enc = encoder if encoder is not None else build_encoder(**encoder_options)
        info = enc.info
        if refiner is not None:
            info = {**info, "refined_by": refiner.info}
        fp = fingerprint(info, dtype, depth_scale, refiner)
        sinks: list[FeatureBag | FeatureDataset] = []
        if write_bag:
            sinks.append(FeatureBag(out / f"{name}_features", info, fp, str(bag), dtype, segment_frames, compression))
        if dataset:
            sinks.append(FeatureDataset(out / f"{name}_dataset", info, fp, str(bag), dtype, chunk_frames))
        if overwrite:
            for s in sinks:
                if s.path.exists():
                    import shutil

                    shutil.rmtree(s.path)
        done = [s.open(resume) for s in sinks]
        for s in sinks:
            result.notes += s.notes
            result.outputs["bag" if isinstance(s, FeatureBag) else "dataset"] = str(s.path)
        _run(source, enc, sinks, done, result, batch, depth_scale, limit, progress, on_batch,
             {c.name: d.name for d, c in pairs}, refiner, prefetch)
    return result


def _run(source: BagSource, enc: Any, sinks: list[Any], done: list[set[Key]], result: ExtractResult,
         batch: int, depth_scale: float, limit: int, progress: bool,
         on_batch: Callable[[ExtractResult], None] | None, depth_of: dict[str, str], refiner: Any,
         prefetch: bool) -> None:
    from tqdm import tqdm

    bag_sink = next((s for s in sinks if isinstance(s, FeatureBag)), None)
    ds_sink = next((s for s in sinks if isinstance(s, FeatureDataset)), None)
    dtype = sinks[0].dtype  # every sink writes the one --dtype: converted on the device, before the download
    kind = INPUTS[enc.info["modality"]]
    pairers = {d: StampPairer(("depth", "color")) for d in depth_of.values()}  # colour topic -> its depth's
    read = functools.partial(read_events, topics=result.topics + list(depth_of), depth_of=depth_of, pairers=pairers,
                             kind=kind, params={"depth_scale": depth_scale},
                             bag_done=done[sinks.index(bag_sink)] if bag_sink else None,
                             ds_done=done[sinks.index(ds_sink)] if ds_sink else None)
    rejected: Counter[str] = Counter()
    pending: ShapeBatches[Frame] = ShapeBatches(batch)
    consecutive_failures = 0

    def reject(reason: str, exc: Exception) -> None:
        rejected[reason] += 1
        result.examples.setdefault(reason, str(exc) or type(exc).__name__)
        if rejected[reason] <= 3:
            log.warning("%s: skipping a malformed message (%s): %s", result.bag, reason, exc)

    def flush(frames: list[Frame]) -> None:
        nonlocal consecutive_failures
        try:
            xs, refined = np.stack([f.x for f in frames]), None
            if refiner is not None:  # the refined depth goes on to the encoder where it lies (on the device)
                from ..refiner import refine_for_encoder

                xs, depth, mask = refine_for_encoder(refiner, xs)
                refined = (depth, mask)
            cls, dense = enc.encode(xs).numpy(dtype)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a failing forward pass costs its frames only
            result.failed += len(frames)
            consecutive_failures += 1
            log.error("%s: encoder failed on %d frame(s): %s", result.bag, len(frames), exc)
            if consecutive_failures >= 3 and result.frames_written == 0:
                raise RuntimeError(f"the encoder fails on every batch: {exc}") from exc
            return
        consecutive_failures = 0
        for i, f in enumerate(frames):
            ref_i = None if refined is None else (refined[0][i], refined[1][i])
            if f.to_bag:
                bag_sink.write(f.topic, f.log_time, bag_sink.header(f.stamp, f.frame_id), cls[i], dense[i], ref_i)
            if f.to_dataset:
                ds_sink.write(f.topic, f.log_time, f.stamp, f.frame_id, cls[i], dense[i],
                              None if ref_i is None else {"depth_refined": ref_i[0], "depth_refined_mask": ref_i[1]})
        result.frames_written += len(frames)
        bar.update(len(frames))
        bar.set_postfix(skipped=sum(rejected.values()), refresh=False)
        if on_batch is not None:
            on_batch(result)

    def own_source() -> Iterator[Frame | Skip | None]:
        with BagSource(source.path) as mine:  # the reader thread's own (sqlite connections stay on one thread)
            yield from read(mine)

    bar = tqdm(total=result.frames_total or None, unit="frame", desc=Path(result.bag).name,
               disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    reached_end = False
    events = Prefetch(own_source, 2 * batch) if prefetch else read(source)
    try:
        try:
            for ev in events:
                if limit and result.frames_written + pending.queued >= limit:
                    result.limited = True
                    break
                result.frames_read += 1
                if isinstance(ev, Skip):
                    if ev.reason is None:
                        result.frames_present += 1
                    else:
                        reject(ev.reason, ev.error)
                    bar.update(ev.counts)
                elif ev is not None and (full := pending.add(ev, ev.x)) is not None:
                    flush(full)
            else:
                reached_end = True
        except BagReadError as exc:
            result.source_truncated = True
            result.notes.append(str(exc))
            log.error("%s", exc)
        finally:
            events.close()  # the reader thread is done with the pairers from here on
        for frames in pending.drain():
            flush(frames)
        if unpaired := sum(p.unpaired + p.waiting for p in pairers.values()):
            rejected["unpaired message (no partner with its stamp)"] += unpaired
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
        result.elapsed_s = time.perf_counter() - t0
        result.rejected = dict(rejected)
        result.complete = reached_end and not result.failed and not result.interrupted
        if result.source_truncated and not result.interrupted and not result.failed and not result.limited:
            result.complete = True  # everything readable is in; the flag below says the bag was damaged
        extra = {"source_truncated": result.source_truncated, "rejected": result.rejected}
        with shielded():
            for s in sinks:
                try:
                    s.commit(result.complete, extra)
                except Exception:  # noqa: BLE001 - close every sink even if one fails
                    log.exception("%s: could not close %s", result.bag, s.path)
                    if isinstance(s, FeatureBag):
                        s.abort()
    if result.interrupted:
        raise ExtractInterrupted(result)


