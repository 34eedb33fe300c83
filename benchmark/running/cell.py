"""One cell of a suite, end to end: claimed, trained or resumed, scored, its record written.

Every executor runs a cell through `execute_cell`: the suite loop (`runner.py`), a `--jobs`
worker (`parallel.py`), a SLURM job (`executors.py`). What the cells of one process share is
`resources.py`; scoring a trained model, here or from a checkpoint, is `scoring.py`. This module
imports none of the executors.

Failures are results: a cell that raises or diverges becomes a `failed` record. A piece that
fails after training (checkpoint, metric, sampler, images) costs only itself: the cell stays
ok, names it in `incomplete`, and keeps its weights so that a rerun completes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from benchmark import environment, files
from benchmark.config import RunConfig, same_training
from benchmark.data.loading import ImageSplits
from benchmark.errors import one_line
from benchmark.models import FAMILIES
from benchmark.records.cellfiles import CellFiles
from benchmark.records.claims import describe_owner, try_claim
from benchmark.records.results import Record, finished_record, make_way_for, read_record
from benchmark.running.resources import Log, SharedResources
from benchmark.running.scoring import Scores, score, score_as, write_grids
from benchmark.tracking.base import NullTracker
from benchmark.train.checkpoints import (
    CheckpointError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from benchmark.train.resume import RollingCheckpoint, TrainingState, capture
from benchmark.train.training import TrainingHistory, cell_threads, resolve_device, train


def run_cell(
    config: RunConfig, shared: SharedResources, log: Log, out_dir: Path, tracker=None
) -> Record:
    """Train (or resume) and score one cell; its record (not yet written). A cell that raises
    or diverges is a `failed` record."""
    started = time.perf_counter()
    cell = CellFiles.of(out_dir, config)
    tracker = tracker or NullTracker()
    device = resolve_device(config.train.device)
    env = environment.describe(device)
    tracker.start(config, env)
    timings: dict[str, float] = {}
    dataset_info: dict[str, Any] = {}
    finished: Finished | None = None
    error = None
    try:
        data_started = time.perf_counter()
        data = shared.data(config)
        timings["data"] = time.perf_counter() - data_started
        dataset_info = data.info
        trained = _train(config, cell, data, shared.settings.checkpoint_every, log, tracker)
        timings["train"] = trained.seconds
        finished = _after_training(config, cell, trained, data, shared, device, log, timings)
    except (KeyboardInterrupt, SystemExit):
        tracker.flush()  # the steps made so far still reach W&B
        raise
    except Exception as exc:  # failures are results
        error = one_line(exc)
    timings["total"] = time.perf_counter() - started
    timings["tracking"] = tracker.seconds  # W&B calls so far (start, steps, epochs)
    known = dict(dataset_info=dataset_info, environment=env, timings=timings)
    if finished is None:
        record = Record.failed(config, error, **known, tracker_run=tracker.run_info())
        tracker.finish(record, {}, None)
        return record
    record = Record.ok(
        config,
        finished.scores.measured,
        training=finished.training,
        **known,
        tracker_run=tracker.run_info(),
        incomplete=finished.incomplete,
    )
    tracker.finish(record, finished.scores.grids, finished.checkpoint)
    return record


@dataclass
class Finished:
    """A trained cell's parts after training: its scores, what its record says of the
    training, its checkpoint (None where writing it failed) and the pieces that failed."""

    scores: Scores
    training: dict[str, Any]
    checkpoint: Path | None
    incomplete: dict[str, str]


@dataclass
class Trained:
    """A cell's model after training, with what its record says of the training."""

    model: Any
    params: Any
    history: TrainingHistory
    rolling: RollingCheckpoint
    seconds: float  # training time, tracking calls excluded
    summary: dict[str, Any]  # the record's `training`


def _train(config: RunConfig, cell: CellFiles, data: ImageSplits, every: int, log, tracker):
    """Build the model and train it, from the rolling checkpoint when there is one."""
    family = FAMILIES.get(config.model)
    params = family.params_model(**config.params)
    torch.manual_seed(config.seed)
    model = family.build(params, data.shape, config.arch)
    rolling = RollingCheckpoint(cell.resume, config, every, log)
    resume = _resume_state(rolling, config, log)
    if resume is not None:
        _replay(tracker, resume)

    def on_epoch(summary: dict) -> None:
        shown = "  ".join(
            f"{k} {v:.4g}" for k, v in summary.items() if k.endswith(("/loss", "recon_loss"))
        )
        log(f"    epoch {int(summary['epoch'])}/{config.train.epochs}  {shown}")
        tracker.log_epoch(summary)

    tracked = tracker.seconds
    history = train(
        family,
        model,
        data,
        config,
        params,
        on_epoch,
        tracker.log_step,
        resume=resume,
        rolling=rolling,
    )
    summary = {
        "epochs": history.epochs,
        "steps": len(history.steps),
        "peak_gpu_memory_mb": history.peak_gpu_memory_mb,
    }
    if resume is not None:
        summary["resumed_after_epoch"] = resume.epochs_done
    # W&B calls made during training (step bursts, epoch rows) are tracking, not training
    seconds = history.seconds - (tracker.seconds - tracked)
    return Trained(model, params, history, rolling, seconds, summary)


def _after_training(config, cell, trained: Trained, data, shared, device, log, timings):
    """The model has trained: from here on a failing piece costs only itself. It is named in
    the record's `incomplete`, the cell stays ok, and its weights stay for the rerun."""
    after = AfterTraining(log)
    after.attempt("steps", lambda: _write_steps(cell, trained.history.steps))
    checkpoint_started = time.perf_counter()
    checkpoint = after.attempt(
        "checkpoint", lambda: save_checkpoint(cell.checkpoint, trained.model, config, data.shape)
    )
    timings["checkpoint"] = time.perf_counter() - checkpoint_started
    scores = score(config, trained.model, trained.params, data, shared, device)
    timings.update(scores.timings)
    after.failed.update(scores.failed)
    after.attempt("images", lambda: write_grids(cell, scores.grids))
    if after.failed:
        after.keep_weights(trained.rolling, trained.model, trained.history)
    return Finished(scores, trained.summary, checkpoint, after.failed)


class AfterTraining:
    """The pieces of a cell after its model has trained, each attempted on its own: one that
    raises is noted (`failed`: piece -> reason) and the cell goes on with the rest."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.failed: dict[str, str] = {}

    def attempt(self, piece: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - recorded, the cell stays ok
            self.failed[piece] = f"failed: {one_line(error)}"
            self.log(f"    {piece} failed after training ({one_line(error)}); the cell goes on")
            return None

    def keep_weights(self, rolling: RollingCheckpoint, model, history) -> None:
        """The trained weights as the cell's final rolling state (weights, steps, epochs, RNG:
        all a rerun needs to complete the cell without training it again)."""
        state = capture(None, model, rolling.config.train.epochs, history, history.seconds)
        try:
            rolling.write(state)
        except OSError as error:
            self.failed["weights"] = f"not kept ({one_line(error)}): a rerun trains it again"


def _resume_state(rolling: RollingCheckpoint, config: RunConfig, log: Log):
    state, why_not = rolling.load()
    if why_not is not None:
        log(f"    {why_not}: training from the first epoch")
        rolling.discard()
    elif state is not None:
        log(
            f"    resuming from the rolling checkpoint after epoch "
            f"{state.epochs_done}/{config.train.epochs}"
        )
    return state


def _replay(tracker, state: TrainingState) -> None:
    """The resumed cell's W&B run gets the steps and epochs trained before the interruption
    (every epoch has the same number of steps), so its curves are whole."""
    per_epoch = len(state.steps) // state.epochs_done
    for index, step in enumerate(state.steps):
        tracker.log_step(
            {**step, "trainer/step": index + 1, "trainer/epoch": index // per_epoch + 1}
        )
        if (index + 1) % per_epoch == 0:
            tracker.log_epoch(state.epochs[index // per_epoch])


def _write_steps(cell: CellFiles, steps: list[dict]) -> None:
    """Per-step training components beside the record (too long for the record itself)."""
    if steps:
        frame = pd.DataFrame(steps)
        frame.insert(0, "step", range(1, len(frame) + 1))
        files.write_with(
            cell.steps, lambda temporary: frame.to_csv(temporary, index=False), cell.root
        )


# the metrics a cell's line shows: reconstruction, and realism (gen/ssim is self-consistency)
HEADLINE = ("recon/ssim", "recon/mse", "gen/cfd")


def _report_cell(prefix: str, record: Record, log: Log) -> None:
    if record.status == "ok":
        m = record.metrics
        shown = "  ".join(f"{key} {m[key]:.4g}" for key in HEADLINE if key in m)
        line = f"{prefix}: ok in {record.timings.get('total', 0):.1f}s  {shown}"
        if record.incomplete:
            pieces = "; ".join(f"{k}: {v}" for k, v in sorted(record.incomplete.items()))
            line += f"  (incomplete, a rerun completes it: {pieces})"
        log(line)
    else:
        log(f"{prefix}: FAILED: {record.error}")


@dataclass(frozen=True)
class HeldElsewhere:
    """The cell is being trained by another runner on the same results folder."""

    owner: str


def execute_cell(
    config: RunConfig,
    out_dir: Path,
    shared: SharedResources,
    log: Log,
    tracker_factory: Callable,
    prefix: str,
) -> Record | HeldElsewhere:
    """Claim the cell, train and evaluate it, write its record, release the claim.

    The one unit every executor runs (here, in a `--jobs` worker, in a SLURM job), so that
    runners sharing a results folder train each cell once and never lose a record.
    """
    cell = CellFiles.of(out_dir, config)
    claim = try_claim(cell)
    if claim is None:
        return HeldElsewhere(describe_owner(cell))
    with claim, cell_threads(config.train.threads):
        if (done := finished_record(cell, config)) is not None:  # by another runner, meanwhile
            return done
        if (rescored := _score_without_training(cell, config, shared, log, prefix)) is not None:
            return rescored
        missing = _incomplete_pieces(cell, config)
        kept = make_way_for(cell, config)  # the cell is ours now: keep what is there
        if kept is not None:
            log(f"{prefix}: {kept}")
        if missing is not None and cell.resume.exists():  # the final state: no epoch runs
            log(f"{prefix}: finished earlier without {missing}; completing it from its weights")
        else:
            if missing is not None:
                log(f"{prefix}: finished earlier without {missing}; its weights were not kept")
            log(
                f"{prefix}: training {config.model} on {config.dataset} ({config.arch} "
                f"networks, {config.train.epochs} epochs)"
            )
        record = run_cell(config, shared, log, out_dir, tracker_factory())
        record.write(cell.record)
        # a failed or incomplete cell keeps its rolling state: its rerun need not train again
        if record.finished:
            cell.resume.unlink(missing_ok=True)
        return record


def _incomplete_pieces(cell: CellFiles, config: RunConfig) -> str | None:
    """What an ok record of this very config lacks (its `incomplete` pieces), or None."""
    record = read_record(cell.record)
    if record is None or record.status != "ok" or not record.incomplete:
        return None
    if record.config_hash != config.config_hash():
        return None
    return ", ".join(sorted(record.incomplete))


def _score_without_training(cell: CellFiles, config: RunConfig, shared, log: Log, prefix: str):
    """A finished cell whose checkpoint trains exactly what `config` trains (only evaluation
    settings differ: a sampler, n_gen, FID on) is scored again from it, not retrained."""
    checkpoint = cell.checkpoint
    record = read_record(cell.record)
    if record is None or record.status != "ok" or not checkpoint.exists():
        return None
    if record.config_hash == config.config_hash():  # this config, incomplete: completed
        return None  # by the run itself, from its kept weights
    try:  # the metadata first: a checkpoint of other training is not loaded at all
        metadata = read_metadata(checkpoint)
        stored = RunConfig.model_validate_json(metadata["config"])
    except (CheckpointError, ValueError, KeyError):
        return None
    # the hash as written beside the weights: a checkpoint of an older vaebench, whose config
    # lacks settings added since (at their defaults now), is still the record's
    if metadata.get("config_hash") != record.config_hash or not same_training(stored, config):
        return None
    try:
        loaded = load_checkpoint(checkpoint, resolve_device(config.train.device))
        return score_as(cell, record, loaded, config, shared, log, prefix)
    except Exception as error:  # noqa: BLE001 - then it is trained, as before
        log(f"{prefix}: scoring from its checkpoint failed ({one_line(error)}); training it")
        return None


def report_outcome(prefix: str, outcome: Record | HeldElsewhere, log: Log) -> None:
    if isinstance(outcome, HeldElsewhere):
        log(f"{prefix}: being trained by {outcome.owner} (same results folder), left to it")
    else:
        _report_cell(prefix, outcome, log)
