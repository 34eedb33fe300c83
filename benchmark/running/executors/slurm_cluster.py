"""What this process knows of a SLURM cluster, and how it watches its jobs there.

The partition a job goes to, as `sinfo` reports it; what a job asks for, checked against it
before submission; a job's state from `squeue`/`sacct`; `JobWatch`, which learns each
submitted job's end from SLURM itself (submitit alone waits forever for a job cancelled on a
cluster without accounting). Cells and sweep trials as jobs are `slurm.py`.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config import RunConfig, SlurmConfig
from benchmark.errors import UserInputError, one_line

SINFO_TIMEOUT_S = 20


@dataclass(frozen=True)
class Partition:
    """What one node of a SLURM partition offers, as `sinfo` reports it."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int
    time_limit_min: int | None  # None: no limit


def read_partition(name: str | None) -> Partition:
    """The partition `name` (None: the cluster's default one), from `sinfo`. One line (exit 2)
    when the controller cannot be reached or there is no such partition."""
    fields = "%P|%c|%m|%G|%l"
    command = ["sinfo", "--noheader", "--format", fields] + (["--partition", name] if name else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SINFO_TIMEOUT_S)
    except FileNotFoundError:
        raise UserInputError("--executor slurm: this machine has no SLURM client (sinfo)") from None
    except subprocess.TimeoutExpired:
        raise UserInputError(
            f"--executor slurm: the SLURM controller did not answer within {SINFO_TIMEOUT_S}s"
        ) from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no answer"])[-1]
        raise UserInputError(f"--executor slurm: cannot reach the SLURM controller ({reason})")
    rows = [line.split("|") for line in done.stdout.splitlines() if line.strip()]
    if name is None:
        rows = [row for row in rows if row[0].endswith("*")]  # sinfo marks the default
    if not rows:
        which = f"partition '{name}'" if name else "default partition"
        raise UserInputError(f"--executor slurm: the cluster has no {which}")
    return Partition(
        name=rows[0][0].rstrip("*"),
        cpus=max(int(row[1].rstrip("+")) for row in rows),
        memory_mb=max(int(row[2].rstrip("+")) for row in rows),
        gpus=max(_gpus(row[3]) for row in rows),
        time_limit_min=_minutes(rows[0][4]),
    )


def _gpus(gres: str) -> int:
    """`gpu:4`, `gpu:a100:8(S:0-1)`, `(null)` -> GPUs per node."""
    count = 0
    for part in gres.split(","):
        if part.startswith("gpu"):
            count += int(part.split("(")[0].split(":")[-1] or 0)
    return count


def _minutes(limit: str) -> int | None:
    """sinfo's time limit in whole minutes: `infinite`, `MM`, `MM:SS`, `HH:MM:SS`,
    `D-HH`, `D-HH:MM`, `D-HH:MM:SS`."""
    if limit in ("infinite", "UNLIMITED", "n/a"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    if days:
        hours, minutes = parts[0], (parts[1] if len(parts) > 1 else 0)
    elif len(parts) == 3:
        hours, minutes = parts[0], parts[1]
    else:
        hours, minutes = 0, parts[0]
    return int(days or 0) * 1440 + hours * 60 + minutes


def job_request(slurm: SlurmConfig, cells: list[RunConfig], partition: Partition) -> dict:
    """What each job asks for: the suite's `slurm:` settings, or what its cells need; refused in
    one line (exit 2) when the partition can never give it."""
    devices = {cell.train.device for cell in cells}
    if slurm.gpus_per_job is not None:
        gpus = slurm.gpus_per_job
    else:
        gpus = 1 if "cuda" in devices or ("auto" in devices and partition.gpus) else 0
    cpus = slurm.cpus_per_job or max((cell.train.threads for cell in cells), default=1)
    wants = {
        "GPUs": (gpus, partition.gpus, "slurm.gpus_per_job"),
        "CPUs": (cpus, partition.cpus, "slurm.cpus_per_job"),
        "GB of memory": (slurm.mem_gb or 0, partition.memory_mb // 1024, "slurm.mem_gb"),
    }
    if partition.time_limit_min is not None:
        wants["minutes"] = (slurm.time_min, partition.time_limit_min, "slurm.time_min")
    for what, (asked, offered, key) in wants.items():
        if asked > offered:
            raise UserInputError(
                f"--executor slurm: a job asks for {asked} {what} ({key}), but a node of "
                f"partition '{partition.name}' has at most {offered}; lower {key}"
            )
    request = {"gpus_per_node": gpus, "cpus_per_task": cpus, "timeout_min": slurm.time_min}
    if slurm.mem_gb:
        request["mem_gb"] = slurm.mem_gb
    return request


def slurm_executor(
    slurm: SlurmConfig,
    folder: Path,
    name: str,
    cells: list[RunConfig],
    partition: Partition | None = None,
):
    """submitit's SLURM executor, its jobs sized for `cells` and checked against the partition
    (read now unless given) before anything is submitted; one line when this machine has no
    SLURM."""
    import submitit

    request = job_request(slurm, cells, partition or read_partition(slurm.partition))
    try:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    except RuntimeError as error:
        raise UserInputError(f"--executor slurm: {error}") from None
    parameters: dict[str, Any] = {"name": name, "nodes": 1, "tasks_per_node": 1, **request}
    if slurm.partition:
        parameters["slurm_partition"] = slurm.partition
    if slurm.account:
        parameters["slurm_account"] = slurm.account
    if slurm.max_parallel:
        parameters["slurm_array_parallelism"] = slurm.max_parallel
    executor.update_parameters(**parameters)
    return executor


# ---- waiting for the jobs: their fate read from SLURM itself ------------------------------------

POLL_S = 2.0
# states in which a job has ended without (necessarily) a result; PREEMPTED and REQUEUED jobs
# come back (JobRequeue), so they are waited for
ENDED = ("CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
# pending reasons that never clear by waiting: the request does not fit the partition
NEVER_STARTS = (
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "AccountNotAllowed",
    "QOSMaxCpuPerJobLimit",
)
# a job that SLURM no longer lists (squeue) nor knows (sacct: no accounting) is given this long
# to deliver its result before its cell is failed
VANISHED_GRACE_S = 30.0


def slurm_state(job_id: str) -> tuple[str | None, str]:
    """(state, pending reason) of a job: from `squeue` while it is queued or running, then from
    `sacct`; (None, "") when neither knows it (it has left the queue, and there is no
    accounting)."""
    queued = _ask(["squeue", "--noheader", "--format=%T|%r", f"--jobs={job_id}"])
    if queued:
        state, _, reason = queued.splitlines()[0].partition("|")
        return state.strip(), reason.strip()
    accounted = _ask(["sacct", "--noheader", "-X", "--parsable2", "--format=State", "-j", job_id])
    if accounted:
        return accounted.splitlines()[0].split()[0], ""  # `CANCELLED by 0` -> CANCELLED
    return None, ""


def _ask(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SINFO_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _ask(["scancel", *job_ids])


class NeverStarts(Exception):
    """A job pending for a reason that waiting never clears."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"job {job_id} can never start ({reason})")
        self.job_id, self.reason = job_id, reason


class JobWatch:
    """Submitted jobs, each until SLURM says how it ended: its result, or `failed(key,
    message)` naming the job and the state it ended in, with or without accounting.

    Interrupted (Ctrl-C, SIGTERM) or told that a job can never start, the jobs still queued
    or running are cancelled, and only those."""

    def __init__(self, failed: Callable[[Hashable, str], Any], log: Callable[[str], None]):
        self.jobs: dict[Hashable, Any] = {}  # key -> submitit job, until it has ended
        self.failed = failed
        self.log = log
        self.vanished: dict[Hashable, float] = {}  # key -> when SLURM stopped knowing the job

    def add(self, key: Hashable, job: Any) -> None:
        self.jobs[key] = job

    def poll(self) -> dict[Hashable, Any]:
        """The outcomes of the jobs that have ended since the last poll."""
        ended = {}
        for key in list(self.jobs):
            outcome = self._outcome(key)
            if outcome is not None:
                ended[key] = outcome
                del self.jobs[key]
        return ended

    def wait_all(self, report: Callable[[Hashable, Any], None]) -> dict[Hashable, Any]:
        """Every job's outcome; `report(key, outcome)` as each ends."""
        done = {}
        with self.cancelled_when_stopped():
            while self.jobs:
                for key, outcome in self.poll().items():
                    done[key] = outcome
                    report(key, outcome)
                if self.jobs:
                    time.sleep(POLL_S)
        return done

    @contextmanager
    def cancelled_when_stopped(self) -> Iterator[None]:
        """Whatever stops the waiting cancels the jobs still queued or running; a job that can
        never start becomes one line (exit 2)."""
        try:
            yield
        except BaseException as stop:
            said = self.cancel_left()
            if isinstance(stop, NeverStarts):
                raise UserInputError(
                    f"--executor slurm: {stop}: the partition cannot give what the job asks "
                    "(slurm.cpus_per_job, slurm.mem_gb, slurm.gpus_per_job, slurm.time_min, "
                    f"slurm.account){'; ' + said if said else ''}"
                ) from None
            if said:
                self.log(said)
            raise

    def cancel_left(self) -> str:
        """Cancel the jobs not yet ended (and stop watching them); the line saying which."""
        left = [str(job.job_id) for job in self.jobs.values()]
        self.jobs.clear()
        if not left:
            return ""
        cancel(left)
        return f"cancelled this run's SLURM jobs still queued or running: {', '.join(left)}"

    def _outcome(self, key: Hashable) -> Any:
        job = self.jobs[key]
        from submitit.core.utils import UncompletedJobError
        from submitit.slurm.slurm import SlurmJob

        on_slurm = isinstance(job, SlurmJob)  # not submitit's local executor
        if job.done():  # submitit has its result, its traceback, or knows it has none
            try:
                return job.result()
            except UncompletedJobError:  # ended without a result: say how, in SLURM's word
                state = slurm_state(str(job.job_id))[0] if on_slurm else None
                ended = f"ended {state}" if state else "ended"
                return self.failed(key, f"job {job.job_id} {ended} without a result")
            except Exception as error:  # noqa: BLE001 - the job itself raised
                return self.failed(key, f"job {job.job_id} failed: {one_line(error)}")
        if not on_slurm:
            return None
        state, reason = slurm_state(str(job.job_id))
        if state == "PENDING" and reason in NEVER_STARTS:
            raise NeverStarts(str(job.job_id), reason)
        if state is not None and state.startswith(ENDED):
            time.sleep(POLL_S)  # a result written just before the end is still taken
            if job.done():
                return self._outcome(key)
            return self.failed(key, f"job {job.job_id} ended {state} without a result")
        if state is None:
            first = self.vanished.setdefault(key, time.monotonic())
            if time.monotonic() - first > VANISHED_GRACE_S:
                return self.failed(
                    key,
                    f"job {job.job_id} left the queue without a result (SLURM keeps no "
                    "accounting here, so its end state is unknown)",
                )
        else:
            self.vanished.pop(key, None)
        return None
