"""`vaebench run --jobs N`: up to N cells at once, each worker a process of its own.

One small cell leaves most of a GPU idle (the card waits for Python between kernels), so
several cells per card multiply a suite's throughput. Each cell computes with its own
`train.threads` CPU threads, as it does in the sequential runner (the count is part of its
config: the same config gives the same numbers either way); on a CPU, N workers with
cores/N threads each beat one process with all of them on these small networks, so a suite
meant for `--jobs N` sets `train.threads` to fit.

- Workers are spawned (fresh interpreters: no forked CUDA or thread state) and take cells
  from one queue; each loads a dataset once and reuses it for its later cells.
- GPUs round-robin: worker i sees only GPU i mod G (`CUDA_VISIBLE_DEVICES`, taken from the
  parent's own list when it has one); N > G puts several workers on a card.
- Each cell runs through `cell.execute_cell`, as in the sequential runner: claim, train,
  evaluate, write the record atomically, one W&B run. Workers send their progress lines and
  outcomes to this process, which prints them in order of arrival.
- Ctrl-C (or SIGTERM) here stops the workers (their W&B steps are flushed) and keeps every
  finished cell. A worker that dies (OOM killer, segfault) fails only the cell it was running;
  a new worker takes its place.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:  # hands lambdas and closures (tracker factories, test doubles) to the workers
    import cloudpickle as pickler
except ImportError:  # stripped GPU images: plain pickle carries the default factories
    import pickle as pickler

from benchmark.config import RunConfig
from benchmark.records.cellfiles import CellFiles
from benchmark.records.claims import try_claim
from benchmark.records.results import Record, finished_record
from benchmark.running.cell import report_outcome

Log = Callable[[str], None]
STOP_GRACE_S = 20.0  # how long stopped workers get to flush W&B before they are killed


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def visible_gpus(configs: list[RunConfig]) -> list[str]:
    """The GPU ids the cells may use: none when they run on the CPU."""
    if all(c.train.device == "cpu" for c in configs):
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [part.strip() for part in listed.split(",") if part.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def worker_plan(workers: int, gpus: list[str]) -> list[dict[str, str]]:
    """The environment of each worker: its GPU (round-robin). Threads are each cell's own."""
    return [
        {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]} if gpus else {} for slot in range(workers)
    ]


def thread_note(configs: list[RunConfig], workers: int, cores: int) -> str:
    """How the cells' threads sit on the cores, and what fits when they oversubscribe."""
    counts = sorted({config.train.threads for config in configs})
    shown = "/".join(str(count) for count in counts)
    note = f"{shown} threads a cell (train.threads)"
    if workers * counts[-1] > cores:
        fits = max(1, cores // workers)
        note += (
            f"; {workers} workers x {counts[-1]} threads > {cores} cores: oversubscribed "
            f"(--set train.threads={fits} fits; it is part of each cell's config)"
        )
    return note


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """Set variables for the duration of the block: a spawned worker copies them at start."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _worker_main(slot, tasks, events, out_dir: str, payload: bytes, total: int) -> None:
    """One worker: cells from `tasks` until the None sentinel; events back to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; it sends SIGTERM
    signal.signal(signal.SIGTERM, _interrupt)
    # imported here, after the signal handlers: a Ctrl-C while torch loads is the parent's
    from benchmark.running.cell import execute_cell
    from benchmark.running.resources import SharedResources

    tracker_factory, settings = pickler.loads(payload)
    shared = SharedResources(settings)
    try:
        while (task := tasks.get()) is not None:
            index, config_json = task
            config = RunConfig.model_validate_json(config_json)
            prefix = f"[{index}/{total}] {config.cell_id}"

            def log(message: str, cell_id=config.cell_id, index=index) -> None:
                if message[:1].isspace():  # epoch lines: say whose they are
                    message = f"    {cell_id} {message.strip()}"
                events.put(("log", slot, index, message))

            events.put(("start", slot, index, None))
            outcome = execute_cell(config, Path(out_dir), shared, log, tracker_factory, prefix)
            events.put(("done", slot, index, outcome))
    except KeyboardInterrupt:
        pass  # stopped by the parent: the cell's W&B steps were flushed on the way out


def run_in_workers(
    pending: list[tuple[int, RunConfig]],
    total: int,
    jobs: int,
    out_dir: Path,
    settings,
    log: Log,
    tracker_factory: Callable,
) -> dict[int, Any]:
    """Run `pending` cells ((index, config) pairs) in up to `jobs` workers; outcomes by index.
    `settings`: the run's `RunSettings`, sent to each worker with the tracker factory."""
    pool = _WorkerPool(pending, total, min(jobs, len(pending)), out_dir, log)
    return pool.run(pickler.dumps((tracker_factory, settings)))


class _WorkerPool:
    def __init__(self, pending, total: int, count: int, out_dir: Path, log: Log) -> None:
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")
        self.tasks, self.events = self.context.Queue(), self.context.Queue()
        self.configs: dict[int, RunConfig] = dict(pending)
        self.total, self.out_dir, self.log = total, Path(out_dir), log
        self.plan = worker_plan(count, visible_gpus(list(self.configs.values())))
        self.workers: list = []
        self.running: dict[int, int] = {}  # slot -> index of the cell it is training
        self.outcomes: dict[int, Any] = {}
        self.idle_checks = 0
        for index, config in pending:
            self.tasks.put((index, config.model_dump_json()))
        for _ in range(count):
            self.tasks.put(None)

    def _start(self, slot: int, payload: bytes):
        process = self.context.Process(
            target=_worker_main,
            args=(
                slot,
                self.tasks,
                self.events,
                str(self.out_dir),
                payload,
                self.total,
            ),
            name=f"vaebench-worker-{slot}",
        )
        with _environment(self.plan[slot]):
            process.start()
        return process

    def run(self, payload: bytes) -> dict[int, Any]:
        self.workers = [self._start(slot, payload) for slot in range(len(self.plan))]
        gpus = sorted({env.get("CUDA_VISIBLE_DEVICES", "") for env in self.plan} - {""})
        where = f"GPUs {', '.join(gpus)} (round-robin)" if gpus else "the CPU"
        self.log(
            f"running {len(self.configs)} cells in {len(self.workers)} worker processes on "
            f"{where}, "
            + thread_note(list(self.configs.values()), len(self.workers), available_cores())
        )
        try:
            while len(self.outcomes) < len(self.configs):
                try:
                    kind, slot, index, value = self.events.get(timeout=0.5)
                except queue.Empty:
                    self._replace_dead_workers(payload)
                    continue
                if kind == "log":
                    self.log(value)
                elif kind == "start":
                    self.running[slot] = index
                elif kind == "done" and index not in self.outcomes:
                    self.running.pop(slot, None)
                    self.outcomes[index] = value
                    report_outcome(self._prefix(index), value, self.log)
        except BaseException:
            _stop(self.workers, self.events)
            raise
        for process in self.workers:
            process.join(timeout=STOP_GRACE_S)
        _stop(self.workers, self.events)
        return self.outcomes

    def _prefix(self, index: int) -> str:
        return f"[{index}/{self.total}] {self.configs[index].cell_id}"

    def _fail(self, index: int, error: str) -> None:
        config = self.configs[index]
        self.outcomes[index] = Record.failed(config, error)
        self.outcomes[index].write(CellFiles.of(self.out_dir, config).record)
        self.log(f"{self._prefix(index)}: FAILED: {error}")

    def _replace_dead_workers(self, payload: bytes) -> None:
        """A worker that died mid-cell fails that cell (its claim died with it); a new worker
        takes its slot and the cells still queued."""
        for slot, process in enumerate(self.workers):
            if not process.exitcode or slot not in self.running:  # alive, or left normally
                continue
            index = self.running.pop(slot)
            config = self.configs[index]
            cell = CellFiles.of(self.out_dir, config)
            if (done := finished_record(cell, config)) is not None:  # died after writing it
                self.outcomes[index] = done
            else:
                self._fail(index, f"worker process died (exit code {process.exitcode})")
            stale = try_claim(cell)  # its lock died with it; its file is left: tidy it up
            if stale is not None:
                stale.release()
            self.workers[slot] = self._start(slot, payload)
        if any(p.is_alive() for p in self.workers):
            self.idle_checks = 0
            return
        self.idle_checks += 1  # twice in a row: their last events are read by then
        if self.idle_checks >= 2:  # e.g. every worker failed to start
            codes = sorted({p.exitcode for p in self.workers})
            for index in self.configs.keys() - self.outcomes.keys():
                self._fail(index, f"no worker process left (exit codes {codes})")


def _stop(workers, events) -> None:
    """SIGTERM the workers still alive (they flush W&B and leave), then kill stragglers."""
    for process in workers:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    while any(p.is_alive() for p in workers) and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):  # keep the pipe drained so workers can exit
            while True:
                events.get_nowait()
        time.sleep(0.05)
    for process in workers:
        if process.is_alive():
            process.kill()
        process.join(timeout=5)
