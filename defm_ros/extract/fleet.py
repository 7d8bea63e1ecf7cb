"""Fleets of bags on Ray (SPEC §7): one task per bag, encoders held in long-lived actors.

Bags are the unit of work, and extract_bag's resume makes a retry safe: a task whose actor died
(preempted node, killed process) runs again on a fresh actor with resume=True and adds only the
frames still missing. A bag that cannot be read fails alone. Ray is an optional extra
(`pip install defm_ros[ray]`); nothing else in the package imports this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .job import output_dirs
from .result import ExtractResult

log = logging.getLogger("defm_ros")


class _Progress:
    """Frames written across the cluster, counted by the actors as they write (a Ray actor)."""

    def __init__(self) -> None:
        self.frames = 0

    def add(self, n: int) -> None:
        self.frames += n

    def total(self) -> int:
        return self.frames


class _Worker:
    """One encoder (and refiner) on one GPU (or `threads` CPU threads), for many bags (a Ray actor)."""

    def __init__(self, encoder_options: dict[str, Any], threads: int, refiner_options: dict[str, Any] | None) -> None:
        import torch

        from .job import build_encoder

        if threads:
            torch.set_num_threads(threads)
        self.encoder = build_encoder(**encoder_options)
        self.refiner = None
        if refiner_options is not None:
            from ..refiner import Refiner

            self.refiner = Refiner(**refiner_options)

    def extract(self, bag: str, out: str, options: dict[str, Any], progress: Any,
                on_batch: Callable[[ExtractResult], None] | None) -> ExtractResult:
        from .job import extract_bag

        written = 0

        def report(result: ExtractResult) -> None:
            nonlocal written
            progress.add.remote(result.frames_written - written)
            written = result.frames_written
            if on_batch is not None:
                on_batch(result)

        return extract_bag(bag, out, encoder=self.encoder, refiner=self.refiner, progress=False, on_batch=report,
                           **options)


def extract_fleet(bags: Sequence[str | os.PathLike], out: str | os.PathLike, *, address: str | None = "auto",
                  encoder_options: dict[str, Any] | None = None, refiner_options: dict[str, Any] | None = None,
                  threads: int = 1, retries: int = 2,
                  progress: bool = True, on_batch: Callable[[ExtractResult], None] | None = None,
                  **options: Any) -> list[ExtractResult | Exception]:
    """Extract every bag on a Ray cluster; returns, per bag in order, its ExtractResult or the error
    that ended it (a BagReadError for a bag that cannot be read).

    `address`: "auto" (RAY_ADDRESS or the cluster last started here, else a local one),
    "ray://host:port" or "host:port", or None when `ray.init` was already called. Actors: one per
    GPU (num_gpus=1) where the cluster has GPUs, else CPU actors of `threads` torch threads each, as
    many as the CPUs allow. Outputs mirror
    the bags' folders below their common root (output_dirs), so same-named bags of different robots
    do not collide. `refiner_options`: a Refiner per actor (LingBot-Depth, on the encoder's device),
    built from these (model, weights, num_tokens, ...); None: no refinement.
    `options` go to extract_bag (batch, dataset, dtype, compression, resume, ...);
    a retried bag always resumes. `on_batch` runs in the actor after each written batch.
    """
    import ray
    from tqdm import tqdm

    if address is not None and not ray.is_initialized():  # no address: Ray's own lookup, else a local Ray
        ray.init(address=None if address == "auto" else address, ignore_reinit_error=True, log_to_driver=False)
    paths = [Path(b).resolve() for b in bags]
    outs = output_dirs(paths, Path(out))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": max(threads, 1)}
    count = min(len(paths), gpus or max(1, cpus // max(threads, 1)))
    opts, refine = _actor_options(encoder_options, refiner_options, gpus)
    worker = ray.remote(**resources)(_Worker)
    counter = ray.remote(num_cpus=0)(_Progress).remote()
    schedule = _Schedule([str(p) for p in paths], [str(o) for o in outs], options, counter, on_batch, retries,
                         lambda: worker.remote(opts, threads, refine), count)
    bags_bar = tqdm(total=len(paths), unit="bag", desc="bags", disable=not progress, position=0)
    frames_bar = tqdm(unit="frame", desc="frames", disable=not progress, position=1)
    try:
        while schedule.queue or schedule.running:
            schedule.start()
            done, _ = ray.wait(list(schedule.running), num_returns=1, timeout=0.5)
            frames_bar.update(ray.get(counter.total.remote()) - frames_bar.n)
            for task in done:
                if schedule.finish(task):
                    bags_bar.update(1)
    finally:
        frames_bar.update(ray.get(counter.total.remote()) - frames_bar.n)
        bags_bar.close()
        frames_bar.close()
        for task in schedule.running:
            ray.cancel(task, force=True)
    return schedule.results  # type: ignore[return-value] - every bag has ended


def _actor_options(encoder_options: dict[str, Any] | None, refiner_options: dict[str, Any] | None,
                   gpus: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The actors' encoder and refiner options: where the cluster has GPUs the encoder runs on cuda unless told
    otherwise (a CPU device there is warned about), and the refiner on the encoder's device unless told."""
    opts = dict(encoder_options or {})
    refine = None if refiner_options is None else dict(refiner_options)
    if gpus:
        opts.setdefault("device", "cuda")
        if str(opts["device"]).startswith("cpu"):
            log.warning("the cluster has %d GPU(s) but the device is %s: each actor holds a GPU and computes on "
                        "the CPU (pass device cuda, --device cuda)", gpus, opts["device"])
    if refine is not None:
        refine.setdefault("device", opts.get("device") or "cpu")
    return opts, refine


class _Schedule:
    """Bags to actors, one task per bag: an idle actor takes the next bag. A bag whose actor died goes first
    again, resumed, on a fresh actor (up to `retries` times); a bag's own error is its result."""

    def __init__(self, bags: list[str], outs: list[str], options: dict[str, Any], counter: Any,
                 on_batch: Callable[[ExtractResult], None] | None, retries: int, new_actor: Callable[[], Any],
                 actors: int) -> None:
        self.bags, self.outs, self.options, self.counter, self.on_batch = bags, outs, options, counter, on_batch
        self.retries, self.new_actor = retries, new_actor
        self.idle = [new_actor() for _ in range(actors)]
        self.results: list[ExtractResult | Exception | None] = [None] * len(bags)
        self.attempts = [0] * len(bags)
        self.queue = list(range(len(bags)))
        self.running: dict[Any, tuple[int, Any]] = {}  # task -> (bag, actor)

    def start(self) -> None:
        """Hand waiting bags to idle actors; a bag tried before resumes."""
        while self.queue and self.idle:
            i, actor = self.queue.pop(0), self.idle.pop()
            resume = self.options.get("resume", False) or self.attempts[i] > 0
            task = actor.extract.remote(self.bags[i], self.outs[i], {**self.options, "resume": resume}, self.counter,
                                        self.on_batch)
            self.running[task] = (i, actor)
            self.attempts[i] += 1

    def finish(self, task: Any) -> bool:
        """A task ended: its bag's result or error, or the bag queued again (False) when its actor died."""
        import ray

        i, actor = self.running.pop(task)
        try:
            self.results[i] = ray.get(task)
            self.idle.append(actor)
        except ray.exceptions.RayActorError as exc:  # the actor died: retry on a fresh one
            self.idle.append(self.new_actor())
            if self.attempts[i] <= self.retries:
                self.queue.insert(0, i)
                return False
            self.results[i] = exc
        except ray.exceptions.RayTaskError as exc:  # the bag's own error (unreadable, ...)
            self.idle.append(actor)
            self.results[i] = exc.cause if isinstance(exc.cause, Exception) else exc
        return True


def report(bags: Sequence[str | os.PathLike], results: Sequence[ExtractResult | Exception]) -> str:
    """One line per bag: frames written, skipped by reason, complete or not, real-time factor."""
    lines = []
    for bag, r in zip(bags, results, strict=True):
        if isinstance(r, Exception):
            lines.append(f"{bag}: FAILED: {r}")
            continue
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(r.rejected.items())) or "none"
        rtf = f"{r.realtime_factor:.1f}x real time" if r.realtime_factor else "real time unknown"
        lines.append(f"{bag}: {'complete' if r.complete else 'PARTIAL'}; {r.frames_written} frames written "
                     f"({r.frames_present} already present), skipped: {skipped}; {rtf}")
    return "\n".join(lines)

