"""Run a suite: which cells are finished, the others handed to an executor (`executors/`:
here one after the other, in `--jobs` worker processes, or as SLURM jobs), and the suite's
records in order.

A cell itself (training, scoring, its record) is `benchmark/running/cell.py`. Records are written as
soon as a cell ends, so an interrupted suite loses nothing finished; rerunning skips cells
whose `ok` record has the same config hash.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from benchmark.config import RunConfig
from benchmark.errors import UserInputError
from benchmark.records.cellfiles import CellFiles
from benchmark.records.results import Record, finished_record
from benchmark.running.cell import HeldElsewhere
from benchmark.running.executors.base import Executor
from benchmark.running.executors.local import Local
from benchmark.running.resources import Log, MetricNetworks, RunSettings, SharedResources
from benchmark.tracking.base import NullTracker, RunUpdater, no_update
from benchmark.train.training import cell_threads, resolve_device


def open_datasets(cells: list[RunConfig], shared: SharedResources, log: Log = print) -> None:
    """Load each dataset the cells use (kept in `shared` for the cells run in this process),
    check that a training batch fits its training split, and make each dataset's own
    classifier ready (trained once, cached: `--jobs` workers read it from the cache)."""
    for config in cells:
        data = shared.data(config)
        if config.train.batch_size > len(data.train):
            raise UserInputError(
                f"train.batch_size={config.train.batch_size} is larger than the training split "
                f"of {config.dataset} ({len(data.train)} images)"
            )
    for config in cells:
        if config.eval.classifier:
            device = resolve_device(config.train.device)
            with cell_threads(config.train.threads):  # its weights, as a cell would train them
                shared.realism(config, shared.data(config), device, log)


def run_suite(suite, out_dir: str | Path, **options) -> list[Record]:
    """`run_cells` over every cell of a resolved suite."""
    return run_cells(suite.cells(), out_dir, **options)


def run_cells(
    cells: list[RunConfig],
    out_dir: str | Path,
    mirror: str | None = None,
    log: Log = print,
    networks: MetricNetworks = MetricNetworks(),
    tracker_factory: Callable = NullTracker,
    executor: Executor | None = None,
    jobs: int = 1,
    checkpoint_every: int = 0,
    update_run: RunUpdater = no_update,
) -> list[Record]:
    """Run every cell not already finished; return all the suite's records (old and new).

    `executor`: where the cells run (`executors/`); None is the local one, one cell after the
    other, or `jobs` at once in worker processes. Cells another runner is training are left to
    it (and not returned).
    `checkpoint_every`: epochs between a cell's rolling checkpoints (0: none); a cell that has
    one from an interrupted run resumes from it either way.

    Cells run here (`executor.runs_here`; not SLURM jobs, whose nodes may hold other data) have
    their datasets
    opened before the first one starts: a missing or unreadable dataset, a wrong image column
    or a batch larger than the training split is one line (UserInputError), before any cell.
    """
    out_dir = Path(out_dir)
    records: dict[int, Record] = {}
    pending = []
    for index, config in enumerate(cells, 1):
        if (done := finished_record(CellFiles.of(out_dir, config), config)) is not None:
            log(
                f"[{index}/{len(cells)}] {config.cell_id}: finished earlier with the same config "
                f"({config.config_hash()}), skipped"
            )
            records[index] = done
        else:
            pending.append((index, config))
    settings = RunSettings(mirror, networks, checkpoint_every, update_run)
    shared = SharedResources(settings)
    executor = executor or Local(jobs)
    if executor.runs_here:
        open_datasets([config for _, config in pending], shared, log)
    outcomes = executor.run(pending, len(cells), out_dir, shared, log, tracker_factory)
    records.update({i: o for i, o in outcomes.items() if not isinstance(o, HeldElsewhere)})
    return [records[index] for index in sorted(records)]
