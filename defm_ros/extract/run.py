"""The read-batch-encode-write half of extract_bag: a bag's events (reader.py, on a Prefetch thread) batched by
shape, refined and encoded, written to the outputs (sinks.py); then the outputs committed with what the run did,
kept whole by guards.py."""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..inputs import INPUTS, ShapeBatches, StampPairer
from ..msgs.points import camera_matrix
from .guards import shielded
from .prefetch import Prefetch
from .reader import Frame, Skip, read_events
from .result import ExtractInterrupted, ExtractResult
from .sinks import FeatureBag, FeatureDataset, Key
from .source import BagReadError, BagSource

log = logging.getLogger("defm_ros")


@dataclass
class Outputs:
    """The feature bag and/or the dataset of one run, each with the frames it already holds (resume); None
    where that output is not written."""

    bag: FeatureBag | None
    dataset: FeatureDataset | None
    bag_done: set[Key] | None
    dataset_done: set[Key] | None

    @property
    def sinks(self) -> list[FeatureBag | FeatureDataset]:
        return [s for s in (self.bag, self.dataset) if s is not None]

    def commit(self, complete: bool, extra: dict[str, Any], bag: str) -> None:
        """Close every output, even if one fails (a feature bag that cannot close is aborted); Ctrl-C waits."""
        with shielded():
            for s in self.sinks:
                try:
                    s.commit(complete, extra)
                except Exception:  # noqa: BLE001 - close every sink even if one fails
                    log.exception("%s: could not close %s", bag, s.path)
                    if isinstance(s, FeatureBag):
                        s.abort()


class Run:
    """One pass over a bag's events: frames batched by shape, refined and encoded, written to the outputs; what
    it did goes to `result`. Failures cost frames (skipped, counted), never the run."""

    def __init__(self, enc: Any, refiner: Any, outputs: Outputs, result: ExtractResult, batch: int, limit: int,
                 on_batch: Callable[[ExtractResult], None] | None, bar: Any, points: bool = False) -> None:
        self.enc, self.refiner, self.outputs, self.result, self.points = enc, refiner, outputs, result, points
        self.limit, self.on_batch, self.bar = limit, on_batch, bar
        self.dtype = outputs.sinks[0].dtype  # every sink writes the one --dtype: converted on the device
        self.batches: ShapeBatches[Frame] = ShapeBatches(batch)
        self.rejected: Counter[str] = Counter()
        self.consecutive_failures = 0

    def consume(self, events: Any) -> bool:
        """Batch the events, encoding each full batch; True at the bag's end, False at --limit or where the bag
        turns unreadable (noted). Closes `events` (the reader thread is done with the pairers from there on)."""
        result = self.result
        try:
            for ev in events:
                if self.limit and result.frames_written + self.batches.queued >= self.limit:
                    result.limited = True
                    return False
                result.frames_read += 1
                if isinstance(ev, Skip):
                    self.skip(ev)
                elif ev is not None and (full := self.batches.add(ev, ev.x)) is not None:
                    self.flush(full)
            return True
        except BagReadError as exc:
            result.source_truncated = True
            result.notes.append(str(exc))
            log.error("%s", exc)
            return False
        finally:
            events.close()

    def skip(self, ev: Skip) -> None:
        """A message without a frame: already in every output, or malformed (counted by reason)."""
        if ev.reason is None:
            self.result.frames_present += 1
        else:
            self.rejected[ev.reason] += 1
            self.result.examples.setdefault(ev.reason, str(ev.error) or type(ev.error).__name__)
            if self.rejected[ev.reason] <= 3:
                log.warning("%s: skipping a malformed message (%s): %s", self.result.bag, ev.reason, ev.error)
        self.bar.update(ev.counts)

    def flush(self, frames: list[Frame]) -> None:
        """Encode one batch and write its features."""
        if (features := self.encode(frames)) is not None:
            self.write(frames, *features)

    def encode(self, frames: list[Frame]) -> tuple[np.ndarray, np.ndarray, tuple[Any, Any, Any] | None] | None:
        """(cls, dense, refined depth, mask and points (per frame, None where not made) or None) of a batch; None
        where the forward pass fails, which costs its frames only, unless it fails on the first three batches
        (RuntimeError: the encoder cannot work)."""
        try:
            xs, refined = np.stack([f.x for f in frames]), None
            if self.refiner is not None:  # the refined depth goes on to the encoder where it lies (on the device)
                from ..refiner import refine_for_encoder

                xs, depth, mask, points = refine_for_encoder(self.refiner, xs, [self.intrinsics(f) for f in frames])
                refined = (depth, mask, points)
            cls, dense = self.enc.encode(xs).numpy(self.dtype)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a failing forward pass costs its frames only
            self.result.failed += len(frames)
            self.consecutive_failures += 1
            log.error("%s: encoder failed on %d frame(s): %s", self.result.bag, len(frames), exc)
            if self.consecutive_failures >= 3 and self.result.frames_written == 0:
                raise RuntimeError(f"the encoder fails on every batch: {exc}") from exc
            return None
        self.consecutive_failures = 0
        return cls, dense, refined

    def intrinsics(self, frame: Frame) -> np.ndarray | None:
        """The frame's camera matrix where its points are wanted (--points, a camera_info that has one)."""
        if not self.points or frame.camera_info is None:
            return None
        try:
            return camera_matrix(frame.camera_info)
        except ValueError as exc:
            note = f"{frame.topic}: no points: {exc}"
            if note not in self.result.notes:
                self.result.notes.append(note)
                log.warning("%s: %s", self.result.bag, note)
            return None

    def write(self, frames: list[Frame], cls: np.ndarray, dense: np.ndarray, refined: tuple[Any, Any, Any] | None
              ) -> None:
        """Each frame's features (and refined depth) to the outputs that lack it; progress and on_batch after."""
        bag, ds = self.outputs.bag, self.outputs.dataset
        for i, f in enumerate(frames):
            ref_i = None if refined is None else (refined[0][i], refined[1][i])
            if f.to_bag:
                bag.write(f.topic, f.log_time, bag.header(f.stamp, f.frame_id), cls[i], dense[i], ref_i,
                          camera_info=f.camera_info, points=None if refined is None else refined[2][i])
            if f.to_dataset:
                ds.write(f.topic, f.log_time, f.stamp, f.frame_id, cls[i], dense[i],
                         None if ref_i is None else {"depth_refined": ref_i[0], "depth_refined_mask": ref_i[1]})
        self.result.frames_written += len(frames)
        self.bar.update(len(frames))
        self.bar.set_postfix(skipped=sum(self.rejected.values()), refresh=False)
        if self.on_batch is not None:
            self.on_batch(self.result)

    def close(self, reached_end: bool, elapsed_s: float) -> None:
        """The report: what the run did, in `result` and in the outputs, which are committed complete or partial."""
        result = self.result
        result.elapsed_s = elapsed_s
        result.rejected = dict(self.rejected)
        result.complete = reached_end and not result.failed and not result.interrupted
        if result.source_truncated and not result.interrupted and not result.failed and not result.limited:
            result.complete = True  # everything readable is in; the flag below says the bag was damaged
        extra = {"source_truncated": result.source_truncated, "rejected": result.rejected}
        self.outputs.commit(result.complete, extra, result.bag)


def run(source: BagSource, enc: Any, refiner: Any, outputs: Outputs, result: ExtractResult, *, batch: int,
        depth_scale: float, limit: int, progress: bool, on_batch: Callable[[ExtractResult], None] | None,
        depth_of: dict[str, str], prefetch: bool, info_of: dict[str, str] | None = None, points: bool = False) -> None:
    """Read, batch, encode and write the frames of `result.topics` (paired with the colour topics of `depth_of`,
    colour -> depth, and the camera_info topics of `info_of`, camera_info -> depth), then commit the outputs;
    raises ExtractInterrupted on Ctrl-C, after committing them. `points`: also the refined depth's points."""
    from tqdm import tqdm

    info_of = info_of or {}
    pairers = {d: StampPairer(("depth", "color", "camera_info") if d in info_of.values() else ("depth", "color"))
               for d in depth_of.values()}
    read = functools.partial(read_events, topics=result.topics + list(depth_of) + list(info_of), depth_of=depth_of,
                             info_of=info_of, pairers=pairers,
                             kind=INPUTS[enc.info["modality"]], params={"depth_scale": depth_scale},
                             bag_done=outputs.bag_done, ds_done=outputs.dataset_done)

    def own_source() -> Iterator[Frame | Skip | None]:
        with BagSource(source.path) as mine:  # the reader thread's own (sqlite connections stay on one thread)
            yield from read(mine)

    bar = tqdm(total=result.frames_total or None, unit="frame", desc=Path(result.bag).name,
               disable=not progress, dynamic_ncols=True)
    state = Run(enc, refiner, outputs, result, batch, limit, on_batch, bar, points)
    t0 = time.perf_counter()
    reached_end = False
    events = Prefetch(own_source, 2 * batch) if prefetch else read(source)
    try:
        reached_end = state.consume(events)
        for frames in state.batches.drain():
            state.flush(frames)
        if unpaired := sum(p.unpaired + p.waiting for p in pairers.values()):
            state.rejected["unpaired message (no partner with its stamp)"] += unpaired
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
        state.close(reached_end, time.perf_counter() - t0)
    if result.interrupted:
        raise ExtractInterrupted(result)
