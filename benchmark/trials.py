"""Where a sweep's trials run: as processes here (`LocalTrials`), or one SLURM job each
(`SlurmTrials`). Both run a trial's own command, the one a `wandb agent` would run, and report
each trial's end: its exit status, or why it has none.

`sweeping.run_sweep` proposes the trials and keeps at most `--parallel N` of them running.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchmark.config import RunConfig, SlurmConfig
from benchmark.errors import UserInputError, one_line
from benchmark.slurm import JobWatch, read_partition, slurm_executor

POLL_S = 0.5  # between looks at running trial processes


@dataclass(frozen=True)
class TrialEnd:
    exit_code: int | None  # None: it never finished (cancelled, killed, lost)
    error: str | None = None  # why, when it has no exit status


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


class SlurmTrials:
    """Each trial a SLURM job, sized as `vaebench run --executor slurm` sizes a job of the
    trial's cells (`cells_of(command)`; a command that is not `vaebench run` gets the
    `slurm:` settings as given, one CPU by default). The partition is read once, before the
    first trial: an unreachable controller is one line before anything runs."""

    poll_s = 2.0

    def __init__(
        self,
        slurm: SlurmConfig,
        folder: Path,
        name: str,
        cells_of: Callable[[list[str]], tuple[list[RunConfig], SlurmConfig] | None],
        log: Callable[[str], None],
    ) -> None:
        self.slurm = slurm
        self.folder = folder
        self.name = name
        self.cells_of = cells_of
        self.log = log
        self.partition = read_partition(slurm.partition)
        self.watch = JobWatch(lambda _, error: TrialEnd(None, error), log)

    def start(self, index: int, command: list[str], env: dict[str, str], out: Path) -> str:
        suite = self.cells_of(command)
        cells, slurm = suite if suite else ([], self.slurm)
        executor = slurm_executor(
            slurm, self.folder, f"{self.name}-trial-{index}", cells, self.partition
        )
        try:
            job = executor.submit(TrialJob(), command, env)
        except Exception as error:  # noqa: BLE001 - sbatch refused (partition, account, limits)
            raise UserInputError(f"the scheduler refused the job: {one_line(error)}") from None
        self.watch.add(index, job)
        return f"job {job.job_id}; output in {self.folder / str(job.job_id)}"

    def ended(self) -> dict[int, TrialEnd]:
        with self.watch.cancelled_when_stopped():
            return {
                index: outcome if isinstance(outcome, TrialEnd) else TrialEnd(outcome)
                for index, outcome in self.watch.poll().items()
            }

    def stop(self) -> None:
        """Interrupted: this sweep's jobs still queued or running are cancelled."""
        said = self.watch.cancel_left()
        if said:
            self.log(said)


class TrialJob:
    """The body of a trial's SLURM job: the trial's command, in the job's environment (the
    node's CUDA_VISIBLE_DEVICES, SLURM_*) plus the trial's own variables; its exit status.

    Preempted or out of time, submitit requeues the job (the `checkpoint` method): the
    command runs again, and `vaebench run` continues each cell from its rolling checkpoint.
    """

    def __call__(self, command: list[str], env: dict[str, str]) -> int:
        return subprocess.run(command, env={**os.environ, **env}, check=False).returncode

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
