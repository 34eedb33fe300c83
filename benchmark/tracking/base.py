"""What a cell asks of an experiment tracker, and what a tracker plug-in gives the command line.

A tracker follows one cell: `start`, a row per training step (`log_step`) and per epoch
(`log_epoch`), `finish` with the record, its images and checkpoint. `run_info` names the run in
the record (`tracker_run`: which tracker, where the run is, how it was logged), so that a cell
re-scored later can update its run (`TrackerPlugin.update_run`). A tracker never fails a cell.

A `TrackerPlugin` is one tracker as the command line sees it: its `run` options, the factory of
a run's per-cell trackers, the re-scoring update, and, where the tracker has them, its sweep
agent and its runs as a report's source. Each plug-in is one module of this package,
registered in `benchmark.tracking.TRACKERS`; the modules import their tracker's library only
inside the calls that use it, so that building the parser stays light.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from benchmark.config import RunConfig
    from benchmark.records.results import Record
    from benchmark.report.sources import ReportInputs

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
        """{"tracker": name, "path": where the run is, "mode": how it was logged, and what
        else the plug-in needs to find the run again}, or None."""
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


def flat_config(config: RunConfig) -> dict[str, Any]:
    """Readable in the W&B UI and equal to the names sweeps and `--set` use: `train.epochs`,
    `betavae.beta`, ..."""
    values = config.model_dump(mode="json")
    flat: dict[str, Any] = {}
    for key, value in values.items():
        section = config.model if key == "params" else key
        if isinstance(value, dict):
            flat.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    flat["config_hash"] = config.config_hash()
    return flat


def summary_values(record: Record) -> dict[str, Any]:
    """What a record puts in its run's summary: the metrics, the reasons for the unavailable
    ones, and how gen/, the FID and the classifier numbers were made (for reports built from
    W&B)."""
    values: dict[str, Any] = dict(record.metrics)
    values.update({f"unavailable/{k}": why for k, why in record.unavailable.items()})
    made = ("sampler", "distribution", "classifier")
    values.update({k: getattr(record, k) for k in made if getattr(record, k) is not None})
    return values


def no_update(record: Record, log: Log) -> bool:
    """The `RunUpdater` of tracking off: no run to update."""
    return False


class TrackerPlugin:
    """One tracker for the command line. Subclasses set `name`, `help` and `requires` and
    override what their tracker has; the defaults are a tracker without sweeps or a report
    source."""

    name: str = ""
    help: str = ""  # one line, in --tracker's help
    # (module, pip package) a run with this tracker imports; checked before any work
    requires: tuple[tuple[str, str], ...] = ()

    def add_run_options(self, parser: argparse.ArgumentParser) -> None:
        """Its own `vaebench run` options (`--wandb-project`, `--mlflow-uri`, ...)."""

    def required(self, args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
        """What this run with it imports (`requires`, unless its options say it tracks
        nothing): pre-flight checks these, and only these, before any work."""
        return self.requires

    def check_run_options(self, args: argparse.Namespace) -> None:
        """Bad option values: raise UserInputError (one line, exit 2) before any work."""

    def tracker_factory(
        self, args: argparse.Namespace, out: Path, log: Log
    ) -> Callable[[], Tracker]:
        """What makes each cell's tracker for this run. It travels to `--jobs` workers and
        SLURM jobs (cloudpickle), so it holds settings, never an open connection."""
        raise NotImplementedError

    def update_run(self, record: Record, log: Log) -> bool:
        """After a re-score: push the record to the run its `tracker_run` names."""
        return False

    # -- a sweep agent of this tracker (W&B's `wandb agent`) launched this process ----------
    def in_agent(self) -> bool:
        return False

    def agent_parameters(self, args: argparse.Namespace) -> dict[str, Any]:
        """The trial's parameters, as `section.key` -> value (none where `args` turn this
        tracker off)."""
        return {}

    def agent_folder(self) -> str | None:
        """The run's default --out under the agent, inside the default runs folder (one
        folder per agent run: a requeued run finds its cells again)."""
        return None

    def mark_preempting(self) -> bool:
        """Stopped by SIGTERM under the agent: ask for this run to be requeued."""
        return False

    # -- its runs as a report's source (`vaebench report --wandb ENTITY/PROJECT`) -----------
    def add_report_options(self, parser: argparse.ArgumentParser) -> None:
        """Options of `vaebench report` that name this tracker's runs."""

    def report_source(self, args: argparse.Namespace) -> Callable[[], ReportInputs] | None:
        """When `args` ask for this tracker's runs: what loads them; else None."""
        return None


class OffPlugin(TrackerPlugin):
    name = "off"
    help = "no tracking (the records, steps files and report are written all the same)"

    def tracker_factory(self, args, out: Path, log: Log) -> Callable[[], Tracker]:
        return NullTracker
