"""What one extraction did (ExtractResult), and the interrupt that carries it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ExtractResult:
    """What one extract_bag call did. `complete`: every readable frame of the selected topics
    has its features in every output (possibly over several resumed runs)."""

    bag: str
    outputs: dict[str, str] = field(default_factory=dict)  # "bag" / "dataset" -> path
    topics: list[str] = field(default_factory=list)
    frames_total: int = 0  # messages on the selected topics, per the bag's index
    frames_read: int = 0  # messages read by this run
    frames_written: int = 0  # frames encoded and written by this run
    frames_present: int = 0  # frames skipped because the outputs already held them (resume)
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count (malformed messages)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first error text
    failed: int = 0  # frames whose forward pass failed
    complete: bool = False
    interrupted: bool = False
    limited: bool = False  # stopped by `limit`
    source_truncated: bool = False  # the bag itself is damaged; what was readable was processed
    elapsed_s: float = 0.0
    bag_duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames_written / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def realtime_factor(self) -> float:
        """Recorded time covered by this run's frames / processing time (> 1: faster than real time)."""
        if self.elapsed_s <= 0 or self.frames_total <= 0 or self.bag_duration_s < 1e-3:
            return 0.0  # unknown (a bag of one frame per topic spans no time): summary says so
        covered = self.bag_duration_s * (self.frames_written + sum(self.rejected.values())) / self.frames_total
        return covered / self.elapsed_s

    def summary(self) -> str:
        state = ("complete" if self.complete else "INTERRUPTED (partial, --resume continues)" if self.interrupted
                 else "stopped at --limit (partial, --resume continues)" if self.limited else "PARTIAL")
        lines = [f"{self.bag}: {state}; wrote {self.frames_written} frames"
                 + (f" ({self.frames_present} already present)" if self.frames_present else "")
                 + f" of {self.frames_total} in {self.elapsed_s:.1f} s ({self.frames_per_s:.1f} frames/s, "
                 + (f"{self.realtime_factor:.1f}x real time over {self.bag_duration_s:.1f} s of recording)"
                    if self.realtime_factor else "real time unknown: the recording spans no time)")]
        for reason, n in sorted(self.rejected.items()):
            lines.append(f"  skipped {n} malformed message(s): {reason} (first: {self.examples.get(reason, '')})")
        if self.failed:
            lines.append(f"  {self.failed} frame(s) failed in the encoder (see log); --resume retries them")
        if self.source_truncated:
            lines.append("  the bag is damaged/truncated: features cover what was readable")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  -> {kind}: {p}" + ("" if Path(p).exists() else " (nothing written)")
                  for kind, p in self.outputs.items()]
        return "\n".join(lines)


class ExtractInterrupted(KeyboardInterrupt):
    """KeyboardInterrupt, after the outputs were closed (readable, flagged partial); has `.result`."""

    def __init__(self, result: ExtractResult) -> None:
        super().__init__(result.bag)
        self.result = result
