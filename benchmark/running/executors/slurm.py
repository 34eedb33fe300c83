"""`--executor slurm`: cells as SLURM jobs through submitit, one job array per submission, one
job per cell; a sweep's trials as one job each.

Every job runs the same `cell.execute_cell` and writes its record into the same results folder,
so a SLURM suite resumes, fails and reports exactly like a local one. What the cluster offers
and how a job's end is learned are `slurm_cluster.py`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.config import RunConfig, SlurmConfig
from benchmark.errors import UserInputError, one_line
from benchmark.running.executors.base import ExecutorPlugin, Log, Pending, TrialCells, TrialEnd
from benchmark.running.executors.slurm_cluster import JobWatch, read_partition, slurm_executor


class JobArray:
    """The pending cells as one job array of a submitit executor (SLURM's, or submitit's
    local one in tests), waited for here."""

    runs_here = False  # a node may hold other data and devices: the job opens its own

    def __init__(self, submitit_executor) -> None:
        self.submitit_executor = submitit_executor

    def run(
        self,
        pending: Pending,
        total: int,
        out_dir: Path,
        shared,
        log: Log,
        tracker_factory: Callable,
    ) -> dict[int, Any]:
        return run_as_jobs(
            pending,
            total,
            self.submitit_executor,
            out_dir,
            shared.settings,
            log,
            tracker_factory,
        )


def run_as_jobs(pending, total, executor, out_dir: Path, settings, log, tracker_factory) -> dict:
    """Submit the pending cells as one job array and wait for each; {index: record}."""
    # a failed job's record and each cell's line: the record model imports torch
    from benchmark.records.cellfiles import CellFiles
    from benchmark.records.results import Record
    from benchmark.running.cell import report_outcome

    if not pending:
        return {}
    jobs = []
    try:
        with executor.batch():
            for _, config in pending:
                jobs.append(
                    executor.submit(
                        CellJob(), config.model_dump_json(), str(out_dir), settings, tracker_factory
                    )
                )
    except Exception as error:  # noqa: BLE001 - sbatch refused (partition, account, limits)
        raise UserInputError(f"the scheduler refused the jobs: {one_line(error)}") from None
    log(f"submitted {len(jobs)} jobs: {', '.join(str(job.job_id) for job in jobs)}")
    configs = dict(pending)

    def failed(index: int, error: str):
        record = Record.failed(configs[index], error)
        record.write(CellFiles.of(out_dir, configs[index]).record)
        return record

    watch = JobWatch(failed, log)
    job_ids = {}
    for (index, _), job in zip(pending, jobs, strict=True):
        watch.add(index, job)
        job_ids[index] = job.job_id

    def report(index: int, record) -> None:
        label = f"[{index}/{total}] {configs[index].cell_id} (job {job_ids[index]})"
        report_outcome(label, record, log)

    return watch.wait_all(report)


class CellJob:
    """The body of one SLURM job: claim the cell, run it, write its record, return it (or
    `HeldElsewhere` when another runner is training it).

    submitit requeues a job whose callable has a `checkpoint` method (its
    `helpers.Checkpointable` protocol) when SLURM preempts it or its time runs out. The state
    to carry is already on disk, the cell's rolling checkpoint (`checkpoint_every`), so the
    requeued job is this same call: it finds the rolling checkpoint and continues the cell.
    """

    def __call__(self, config_json: str, out_dir: str, settings, tracker_factory: Callable):
        # on the node: the cell's whole chain (torch, pythae, the metrics)
        from benchmark.running.cell import execute_cell
        from benchmark.running.resources import SharedResources

        config = RunConfig.model_validate_json(config_json)
        shared = SharedResources(settings)
        log = lambda message: print(message, flush=True)  # noqa: E731
        return execute_cell(config, Path(out_dir), shared, log, tracker_factory, config.cell_id)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


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
        cells_of: TrialCells,
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


class SlurmPlugin(ExecutorPlugin):
    name = "slurm"
    help = (
        "one SLURM job per cell (submitit), sized for its cell; settings from the suite's "
        "slurm section or --set slurm.partition=gpu, slurm.time_min=..."
    )

    def create(self, args: argparse.Namespace, suite, cells: list[RunConfig], out: Path):
        # reads the partition (sinfo) and checks the cells' request against it: one line,
        # exit 2, before anything is submitted
        executor = slurm_executor(suite.slurm, out / "slurm", f"vaebench-{suite.name}", cells)
        return JobArray(executor)

    def trials(self, args, slurm: SlurmConfig, out: Path, log: Log, cells_of: TrialCells):
        name = f"vaebench-sweep-{args.file.stem}"
        return SlurmTrials(slurm, out / "slurm", name, cells_of, log)


PLUGIN = SlurmPlugin()
