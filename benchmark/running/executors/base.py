"""Where a run's cells execute: the interface every executor gives the runner, and what an
executor plug-in gives the command line.

An `Executor` takes the cells that are not finished yet and returns each one's outcome (its
`Record`, or `HeldElsewhere` when another runner is training it). Every executor runs a cell
through the same `cell.execute_cell`, so records, resume and failures are the same wherever a
cell ran. An `ExecutorPlugin` is one `--executor NAME`: its options, its checks before any
work, the executor it makes for a run, and where a sweep's trials run with it (`Trials`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from benchmark.config import RunConfig, SlurmConfig
    from benchmark.running.resources import SharedResources

Log = Callable[[str], None]
Pending = list[tuple[int, "RunConfig"]]  # (position in the suite, the cell's config)


class Executor(Protocol):
    # True: the cells run in this process or its children, on this machine's data and
    # devices, so the runner opens their datasets here before the first cell starts
    runs_here: bool

    def run(
        self,
        pending: Pending,
        total: int,
        out_dir: Path,
        shared: SharedResources,
        log: Log,
        tracker_factory: Callable,
    ) -> dict[int, Any]:
        """Run the pending cells; {position: Record or HeldElsewhere}. Each cell's progress
        and end are logged as `[position/total] CELL ...` lines. `shared`: this process's
        loaded datasets and networks; an executor that runs cells elsewhere sends its
        `settings` there."""
        ...


@dataclass(frozen=True)
class TrialEnd:
    exit_code: int | None  # None: it never finished (cancelled, killed, lost)
    error: str | None = None  # why, when it has no exit status


class Trials(Protocol):
    """Where a sweep's trials run: each trial's own command (the one a `wandb agent` would
    run), and each trial's end."""

    poll_s: float

    def start(self, index: int, command: list[str], env: dict[str, str], out: Path) -> str:
        """Start a trial; says where it runs (a process id, a job id, its log)."""
        ...

    def ended(self) -> dict[int, TrialEnd]: ...

    def stop(self) -> None:
        """Interrupted: stop the trials still running."""
        ...


# what a sweep executor is given to size a trial: its cells and SLURM settings, from its command
TrialCells = Callable[[list[str]], "tuple[list[RunConfig], SlurmConfig] | None"]


class ExecutorPlugin:
    """One `--executor NAME`. Subclasses set `name` and `help` and make executors."""

    name: str = ""
    help: str = ""  # one line, in --executor's help

    def add_run_options(self, parser: argparse.ArgumentParser) -> None:
        """Its own `vaebench run` options."""

    def check(self, args: argparse.Namespace, suite, cells: list[RunConfig]) -> None:
        """Raise UserInputError (one line, exit 2) before any work: bad options, devices or
        a scheduler that cannot give what the cells need."""

    def create(
        self, args: argparse.Namespace, suite, cells: list[RunConfig], out: Path
    ) -> Executor:
        raise NotImplementedError

    def trials(
        self,
        args: argparse.Namespace,
        slurm: SlurmConfig,
        out: Path,
        log: Log,
        cells_of: TrialCells,
    ) -> Trials:
        """Where `vaebench sweep --executor NAME` runs its trials."""
        raise NotImplementedError(f"--executor {self.name} does not run sweep trials")
