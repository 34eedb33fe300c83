"""Where cells run: in this process (`local`), or one SLURM job per cell through submitit.

Every job runs the same `cell.execute_cell` and writes its record into the same results folder, so a
SLURM suite resumes, fails and reports exactly like a local one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.cell import execute_cell
from benchmark.config import RunConfig, SlurmConfig
from benchmark.errors import UserInputError
from benchmark.resources import SharedResources


def slurm_executor(slurm: SlurmConfig, folder: Path, name: str):
    """submitit's SLURM executor (fails with one line when this machine has no SLURM)."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    except RuntimeError as error:
        raise UserInputError(f"--executor slurm: {error}") from None
    parameters: dict[str, Any] = {
        "name": name,
        "timeout_min": slurm.time_min,
        "gpus_per_node": slurm.gpus_per_job,
        "cpus_per_task": slurm.cpus_per_job,
        "nodes": 1,
        "tasks_per_node": 1,
    }
    if slurm.partition:
        parameters["slurm_partition"] = slurm.partition
    if slurm.mem_gb:
        parameters["mem_gb"] = slurm.mem_gb
    if slurm.account:
        parameters["slurm_account"] = slurm.account
    executor.update_parameters(**parameters)
    return executor


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
