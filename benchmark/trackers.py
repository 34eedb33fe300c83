"""What a cell asks of an experiment tracker, independent of any one tracker.

A tracker follows one cell: `start`, a row per training step (`log_step`) and per epoch
(`log_epoch`), `finish` with the record, its images and checkpoint. `run_info` names the run in
the record (`tracker_run`: which tracker, where the run is, how it was logged), so that a cell
re-scored later can update its run through a `RunUpdater`. A tracker never fails a cell.

`tracking.py` implements these for Weights & Biases; `NullTracker` tracks nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from benchmark.config import RunConfig
    from benchmark.results import Record

Log = Callable[[str], None]
# pushes a re-scored record to the tracker run it names; True when a run was updated
RunUpdater = Callable[["Record", Log], bool]


class Tracker(Protocol):
    seconds: float  # time spent in tracking calls (kept out of the cell's train/eval timings)

    def start(self, config: RunConfig, environment: dict) -> None: ...

    def log_step(self, values: dict[str, float]) -> None: ...

    def log_epoch(self, summary: dict[str, float]) -> None: ...

    def flush(self) -> None: ...

    def finish(self, record: Record, images: dict, checkpoint: Path | None = None) -> None: ...

    def run_info(self) -> dict[str, str] | None:
        """{"tracker": name, "path": where the run is, "mode": how it was logged}, or None."""
        ...


class NullTracker:
    """Tracking off: every call does nothing."""

    seconds = 0.0

    def start(self, config: RunConfig, environment: dict) -> None:
        pass

    def log_step(self, values: dict[str, float]) -> None:
        pass

    def log_epoch(self, summary: dict[str, float]) -> None:
        pass

    def flush(self) -> None:
        pass

    def finish(self, record: Record, images: dict, checkpoint: Path | None = None) -> None:
        pass

    def run_info(self) -> dict[str, str] | None:
        return None


def no_update(record: Record, log: Log) -> bool:
    """The `RunUpdater` of tracking off: no run to update."""
    return False
