"""Cells as SLURM jobs through submitit: one job array per submission, one job per cell.

Every job runs the same `cell.execute_cell` and writes its record into the same results folder, so a
SLURM suite resumes, fails and reports exactly like a local one. What the cluster offers and how a
job's end is learned are `slurm.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.cell import execute_cell, report_outcome
from benchmark.cellfiles import CellFiles
from benchmark.config import RunConfig
from benchmark.errors import UserInputError, one_line
from benchmark.resources import SharedResources
from benchmark.results import build_record
from benchmark.slurm import JobWatch


def run_as_jobs(pending, total, executor, out_dir: Path, settings, log, tracker_factory) -> dict:
    """Submit the pending cells as one job array and wait for each; {index: record}."""
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
        record = build_record(configs[index], status="failed", error=error)
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
        config = RunConfig.model_validate_json(config_json)
        shared = SharedResources(settings)
        log = lambda message: print(message, flush=True)  # noqa: E731
        return execute_cell(config, Path(out_dir), shared, log, tracker_factory, config.cell_id)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
