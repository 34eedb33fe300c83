"""`--executor local`: the cells run here, one after the other, or with `--jobs N` in N worker
processes (`workers.py`); a sweep's trials run as processes here.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from benchmark.errors import UserInputError, one_line
from benchmark.running.executors.base import ExecutorPlugin, Log, Pending, TrialEnd

POLL_S = 0.5  # between looks at running trial processes


class Local:
    """Here: in this process, one cell after the other (the datasets and metric networks
    loaded for the first cell serve the later ones), or with `jobs` > 1 in worker processes."""

    runs_here = True

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = jobs

    def run(
        self,
        pending: Pending,
        total: int,
        out_dir: Path,
        shared,
        log: Log,
        tracker_factory: Callable,
    ) -> dict[int, Any]:
        if self.jobs > 1 and len(pending) > 1:
            from benchmark.running.executors.workers import (
                run_in_workers,  # spawned processes: --jobs
            )

            return run_in_workers(
                pending, total, self.jobs, out_dir, shared.settings, log, tracker_factory
            )
        # the cell's whole chain (torch, pythae, the metrics): imported once a cell runs
        from benchmark.running.cell import execute_cell, report_outcome

        outcomes = {}
        for index, config in pending:
            prefix = f"[{index}/{total}] {config.cell_id}"
            outcome = execute_cell(config, out_dir, shared, log, tracker_factory, prefix)
            report_outcome(prefix, outcome, log)
            outcomes[index] = outcome
        return outcomes


def check_devices(cells) -> None:
    """`train.device=cuda` on a machine without CUDA: one line now, not a failure per cell
    after the data is loaded. (Only where the cells run here: SLURM nodes may have GPUs.)"""
    if any(cell.train.device == "cuda" for cell in cells):
        import torch  # only for a cell that asks for CUDA

        if not torch.cuda.is_available():
            raise UserInputError(
                "train.device=cuda but this machine has no CUDA device (torch "
                f"{torch.__version__}); use train.device=auto or cpu"
            )


class LocalPlugin(ExecutorPlugin):
    name = "local"
    help = "the cells run here, one after the other (--jobs N: N at once, each in a process)"

    def add_run_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--jobs",
            type=int,
            default=1,
            metavar="N",
            help="run up to N cells at once, each in its own process: GPUs round-robin (N "
            "above the GPU count puts several cells on a card), CPU cores shared [1]",
        )

    def check(self, args: argparse.Namespace, suite, cells) -> None:
        if args.jobs < 1:
            raise UserInputError("--jobs must be at least 1")
        check_devices(cells)

    def create(self, args: argparse.Namespace, suite, cells, out: Path):
        return Local(args.jobs)

    def trials(self, args, slurm, out: Path, log: Log, cells_of) -> LocalTrials:
        return LocalTrials(args.parallel, log)


class LocalTrials:
    """Each trial a process on this machine. One trial at a time shares this terminal; several
    at once each write to `trial.log` in their own folder."""

    poll_s = POLL_S

    def __init__(self, parallel: int, log: Callable[[str], None]) -> None:
        self.to_files = parallel > 1
        self.log = log
        self.running: dict[int, tuple[subprocess.Popen, IO | None]] = {}

    def start(self, index: int, command: list[str], env: dict[str, str], out: Path) -> str:
        output = None
        if self.to_files:
            out.mkdir(parents=True, exist_ok=True)
            output = open(out / "trial.log", "w")  # noqa: SIM115 - closed when the trial ends
        try:
            process = subprocess.Popen(
                command, env={**os.environ, **env}, stdout=output, stderr=output
            )
        except OSError as error:
            if output:
                output.close()
            raise UserInputError(f"sweep: cannot run {command[0]}: {one_line(error)}") from None
        self.running[index] = (process, output)
        where = f"; output in {out / 'trial.log'}" if output else ""
        return f"process {process.pid}{where}"

    def ended(self) -> dict[int, TrialEnd]:
        done = {}
        for index, (process, output) in list(self.running.items()):
            if process.poll() is not None:
                done[index] = TrialEnd(process.returncode)
                if output:
                    output.close()
                del self.running[index]
        return done

    def stop(self) -> None:
        """Interrupted: each running trial gets SIGTERM (vaebench run's preemption path: its
        rolling checkpoint is kept) and is waited for."""
        for process, _ in self.running.values():
            process.send_signal(signal.SIGTERM)
        for process, output in self.running.values():
            process.wait()
            if output:
                output.close()
        if self.running:
            self.log(f"sweep: stopped {len(self.running)} running trials")


PLUGIN = LocalPlugin()
