"""One cell of a suite, end to end: its shared resources, training or resuming, scoring, the
record; and scoring a finished cell again from its checkpoint (`score_as`).

Every executor runs a cell through `execute_cell`: the suite loop (`runner.py`), a `--jobs`
worker (`parallel.py`), a SLURM job (`executors.py`); `vaebench evaluate` (`rescoring.py`)
scores through `score`. This module imports none of them.

Failures are results: a cell that raises or diverges becomes a `failed` record. A piece that
fails after training (checkpoint, metric, sampler, images) costs only itself: the cell stays
ok, names it in `incomplete`, and keeps its weights so that a rerun completes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from benchmark import environment, files
from benchmark.checkpoints import (
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from benchmark.claims import describe_owner, try_claim
from benchmark.classifier import ClassifierReference, load_or_train
from benchmark.config import RunConfig, same_training
from benchmark.data import ImageSplits, load_image_splits
from benchmark.distribution import DistributionReference, InceptionFeatures
from benchmark.environment import code_version
from benchmark.errors import DatasetUnavailable, one_line
from benchmark.evaluation import evaluate
from benchmark.metrics import LPIPS, keys_switched_by, switch_of
from benchmark.models import FAMILIES
from benchmark.results import (
    CHECKPOINT_SUFFIX,
    Record,
    build_record,
    cell_root,
    copy_to_history,
    finished_record,
    make_way_for,
    now_iso,
    read_record,
    record_path,
    write_record,
)
from benchmark.resume import RollingCheckpoint, TrainingState, capture, resume_path
from benchmark.samplers import fit_sampler
from benchmark.trackers import NullTracker, RunUpdater, no_update
from benchmark.training import cell_threads, resolve_device, train

Log = Callable[[str], None]
DISABLED = "disabled by eval.%s=false"


@dataclass(frozen=True)
class MetricNetworks:
    """How the pretrained metric networks are loaded: each loader takes a device and returns
    (network, None) or (None, why it is unavailable). Tests substitute their own."""

    lpips: Callable = LPIPS.load
    features: Callable = InceptionFeatures.load  # FID/KID features


@dataclass(frozen=True)
class RunSettings:
    """What every cell of a run shares, in whichever process it runs (here, a `--jobs` worker,
    a SLURM job): where hub datasets are mirrored, how the metric networks load, how often
    a cell keeps a rolling checkpoint (epochs, 0: never; it changes no result, so it is a
    setting of the run, not of any cell), and how a cell scored again from its checkpoint
    updates its tracker run."""

    mirror: str | None = None
    networks: MetricNetworks = MetricNetworks()
    checkpoint_every: int = 0
    update_run: RunUpdater = no_update


class SharedResources:
    """Loaded once per process of a run: datasets (by name and data config), the metric
    networks and the test sets' FID features."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self._data: dict[tuple, ImageSplits | DatasetUnavailable] = {}
        self._networks = settings.networks
        self._loaded: dict[tuple[str, str], tuple[Any, str | None]] = {}
        self._references: dict[tuple, DistributionReference] = {}
        self._realism: dict[tuple, tuple[ClassifierReference | None, str | None]] = {}

    def data(self, config: RunConfig) -> ImageSplits:
        key = (config.dataset, config.data)
        if key not in self._data:
            try:
                self._data[key] = load_image_splits(
                    config.dataset, config.data, self.settings.mirror
                )
            except DatasetUnavailable as error:
                self._data[key] = error
        loaded = self._data[key]
        if isinstance(loaded, DatasetUnavailable):
            raise loaded
        return loaded

    def _network(self, kind: str, device: str) -> tuple[Any, str | None]:
        if (kind, device) not in self._loaded:
            self._loaded[(kind, device)] = getattr(self._networks, kind)(device)
        return self._loaded[(kind, device)]

    def lpips(self, device: str) -> tuple[Any, str | None]:
        return self._network("lpips", device)

    def reference(
        self, config: RunConfig, data: ImageSplits, device: str
    ) -> tuple[DistributionReference | None, str | None]:
        """The test set's features for FID/KID, computed once per dataset and device."""
        features, reason = self._network("features", device)
        if features is None:
            return None, reason
        key = (config.dataset, config.data, device)
        if key not in self._references:
            self._references[key] = DistributionReference(features, features(data.test))
        return self._references[key], None

    def realism(
        self, config: RunConfig, data: ImageSplits, device: str, log: Log | None = None
    ) -> tuple[ClassifierReference | None, str | None]:
        """The test set's features in the dataset's own classifier (trained here, or read from
        the cache), once per dataset and device; or None and why it is unavailable."""
        key = (config.dataset, config.data, device)
        if key not in self._realism:
            self._realism[key] = _realism_reference(data, device, log)
        return self._realism[key]


def _realism_reference(data: ImageSplits, device: str, log: Log | None):
    if data.labels is None:
        return None, f"no classifier: {data.labels_missing}"
    try:
        classifier = load_or_train(data, device, log)
        if classifier.accurate_enough:
            return ClassifierReference.of(classifier, data.test), None
    except Exception as error:  # noqa: BLE001 - the cell's other metrics go on
        return None, f"failed: the dataset's classifier could not be trained ({one_line(error)})"
    info = classifier.info
    return None, (
        f"the dataset's classifier reaches a test accuracy of {info['test_accuracy']:.3f}, "
        f"below its recipe's floor of {info['accuracy_floor']}"
    )


@dataclass
class Scores:
    """What evaluating a trained model gives: its metrics, the reasons for the unavailable
    ones, image grids, the sampler and FID settings, the time each part took, and the pieces
    that failed (`sampler`, `evaluation` or a metric key -> reason; empty when all worked)."""

    metrics: dict[str, float]
    unavailable: dict[str, str]
    grids: dict[str, torch.Tensor]
    sampler: dict[str, Any] | None
    distribution: dict[str, Any] | None
    timings: dict[str, float]
    failed: dict[str, str] = field(default_factory=dict)
    classifier: dict[str, Any] | None = None  # how cfd, precision and recall were made


def score(
    config: RunConfig, model, params, data: ImageSplits, shared: SharedResources, device: str
) -> Scores:
    """Fit the cell's sampler, then evaluate every metric of docs/metrics.md (the one path for
    a freshly trained model and for a checkpoint re-scored by `vaebench evaluate`).

    Nothing here throws a trained model away: a sampler that fails to fit leaves out gen/, a
    metric that raises leaves out that metric, an evaluation that raises leaves out all of
    them; each is named in `Scores.failed` (and, for metrics, `unavailable`) with its reason.
    """
    family = FAMILIES.get(config.model)
    failed: dict[str, str] = {}
    try:
        sampler = fit_sampler(
            config.eval.sampler, model, params, data.train, data.test, config.eval
        )
    except Exception as error:  # noqa: BLE001 - recorded; recon/ is still measured
        sampler, failed["sampler"] = None, f"failed: {one_line(error)}"
    eval_started = time.perf_counter()
    unavailable: dict[str, str] = {}
    lpips, reason = shared.lpips(device) if config.eval.lpips else (None, DISABLED % "lpips")
    if lpips is None:
        unavailable.update(dict.fromkeys(keys_switched_by("lpips"), reason))
    reference, reason = (
        shared.reference(config, data, device) if config.eval.fid else (None, DISABLED % "fid")
    )
    if reference is None:
        unavailable.update(dict.fromkeys(keys_switched_by("fid"), reason))
    realism, reason = (
        shared.realism(config, data, device)
        if config.eval.classifier
        else (None, DISABLED % "classifier")
    )
    if realism is None:
        unavailable.update(dict.fromkeys(keys_switched_by("classifier"), reason))
    metric_failures: dict[str, str] = {}
    try:
        metrics, grids = evaluate(
            family,
            model,
            params,
            data.test,
            config.eval,
            sampler,
            lpips,
            reference,
            failures=metric_failures,
            realism=realism,
        )
    except Exception as error:  # noqa: BLE001 - the model itself failed to evaluate
        metrics, grids, failed["evaluation"] = {}, {}, f"failed: {one_line(error)}"
    failed.update(metric_failures)
    unavailable.update(metric_failures)
    if sampler is None:  # the gen/ counterpart of every recon/ metric, with the reason
        gen = {f"gen/{key.split('/', 1)[1]}" for key in metrics if key != "recon/fid"}
        gen |= set(keys_switched_by("fid", ("gen",))) if reference is not None else set()
        gen |= set(keys_switched_by("classifier", ("gen",))) if realism is not None else set()
        unavailable.update({key: f"{failed['sampler']} (the sampler)" for key in sorted(gen)})
    distribution = classifier = None
    n_gen = (config.eval.n_gen or len(data.test)) if sampler is not None else 0
    if reference is not None and sampler is not None:
        distribution = reference.settings(n_recon=len(data.test), n_gen=n_gen)
    if realism is not None:
        classifier = realism.settings(n_recon=len(data.test), n_gen=n_gen)
    timings = {
        "sampler_fit": sampler.fit_seconds if sampler is not None else 0.0,
        "eval": time.perf_counter() - eval_started,
    }
    described = sampler.describe() if sampler is not None else None
    return Scores(metrics, unavailable, grids, described, distribution, timings, failed, classifier)


def run_cell(
    config: RunConfig, shared: SharedResources, log: Log, out_dir: Path, tracker=None
) -> dict:
    started = time.perf_counter()
    tracker = tracker or NullTracker()
    family = FAMILIES.get(config.model)
    params = family.params_model(**config.params)
    device = resolve_device(config.train.device)
    env = environment.describe(device)
    tracker.start(config, env)
    dataset_info: dict[str, Any] = {}
    sampler_info: dict[str, Any] | None = None
    distribution_info: dict[str, Any] | None = None
    classifier_info: dict[str, Any] | None = None
    timings: dict[str, float] = {}
    grids: dict[str, torch.Tensor] = {}
    checkpoint = None
    try:
        data_started = time.perf_counter()
        data = shared.data(config)
        timings["data"] = time.perf_counter() - data_started
        dataset_info = data.info
        torch.manual_seed(config.seed)
        model = family.build(params, data.shape, config.arch)
        rolling = RollingCheckpoint(
            resume_path(record_path(out_dir, config)),
            config,
            shared.settings.checkpoint_every,
            log,
        )
        resume = _resume_state(rolling, config, log)
        if resume is not None:
            _replay(tracker, resume)

        def on_epoch(summary: dict) -> None:
            shown = "  ".join(
                f"{k} {v:.4g}"
                for k, v in summary.items()
                if k.endswith("/loss") or k.endswith("recon_loss")
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
        # W&B calls made during training (step bursts, epoch rows) are tracking, not training
        timings["train"] = history.seconds - (tracker.seconds - tracked)
        training = {
            "epochs": history.epochs,
            "steps": len(history.steps),
            "peak_gpu_memory_mb": history.peak_gpu_memory_mb,
        }
        if resume is not None:
            training["resumed_after_epoch"] = resume.epochs_done
        # The model has trained: from here on a failing piece costs only itself. It is named
        # in the record's `incomplete`, the cell stays ok, and its weights stay for the rerun.
        status, error = "ok", None
        after = AfterTraining(log)
        base = record_path(out_dir, config)
        after.attempt("steps", lambda: _write_steps(out_dir, config, history.steps))
        checkpoint_started = time.perf_counter()
        checkpoint = after.attempt(
            "checkpoint",
            lambda: save_checkpoint(checkpoint_path(out_dir, config), model, config, data.shape),
        )
        timings["checkpoint"] = time.perf_counter() - checkpoint_started
        scores = score(config, model, params, data, shared, device)
        metrics, unavailable, grids = scores.metrics, scores.unavailable, scores.grids
        sampler_info, distribution_info = scores.sampler, scores.distribution
        classifier_info = scores.classifier
        timings.update(scores.timings)
        after.failed.update(scores.failed)
        after.attempt("images", lambda: write_grids(base, grids))
        if after.failed:
            after.keep_weights(rolling, model, history)
        incomplete = after.failed
    except (KeyboardInterrupt, SystemExit):
        tracker.flush()  # the steps made so far still reach W&B
        raise
    except Exception as exc:  # failures are results
        metrics, unavailable, training, incomplete = {}, {}, {}, {}
        status, error = "failed", one_line(exc)
        sampler_info = distribution_info = classifier_info = None
    timings["total"] = time.perf_counter() - started
    timings["tracking"] = tracker.seconds  # W&B calls so far (start, steps, epochs)
    record = build_record(
        config,
        status=status,
        error=error,
        metrics=metrics,
        unavailable=unavailable,
        timings=timings,
        environment=env,
        dataset_info=dataset_info,
        training=training,
        sampler=sampler_info,
        distribution=distribution_info,
        classifier=classifier_info,
        tracker_run=tracker.run_info(),
        incomplete=incomplete,
    )
    tracker.finish(record, grids, checkpoint)
    return record


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


def write_grids(base: Path, grids: dict[str, torch.Tensor]) -> None:
    """Small PNG grids beside the record at `base`, for the report."""
    from torchvision.utils import save_image

    for name, grid in grids.items():
        files.write_with(
            base.with_suffix(f".{name}.png"),
            lambda temporary, grid=grid: save_image(grid, temporary),
            cell_root(base),
        )


def _write_steps(out_dir: Path, config: RunConfig, steps: list[dict]) -> None:
    """Per-step training components beside the record (too long for the record itself)."""
    if steps:
        path = record_path(out_dir, config).with_suffix(".steps.csv")
        frame = pd.DataFrame(steps)
        frame.insert(0, "step", range(1, len(frame) + 1))
        files.write_with(path, lambda temporary: frame.to_csv(temporary, index=False), out_dir)


# the metrics a cell's line shows: reconstruction, and realism (gen/ssim is self-consistency)
HEADLINE = ("recon/ssim", "recon/mse", "gen/cfd")


def _report_cell(prefix: str, record: dict, log: Log) -> None:
    if record["status"] == "ok":
        m = record["metrics"]
        shown = "  ".join(f"{key} {m[key]:.4g}" for key in HEADLINE if key in m)
        line = f"{prefix}: ok in {record['timings'].get('total', 0):.1f}s  {shown}"
        if record["incomplete"]:
            pieces = "; ".join(f"{k}: {v}" for k, v in sorted(record["incomplete"].items()))
            line += f"  (incomplete, a rerun completes it: {pieces})"
        log(line)
    else:
        log(f"{prefix}: FAILED: {record['error']}")


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
) -> dict | HeldElsewhere:
    """Claim the cell, train and evaluate it, write its record, release the claim.

    The one unit every executor runs (here, in a `--jobs` worker, in a SLURM job), so that
    runners sharing a results folder train each cell once and never lose a record.
    """
    path = record_path(out_dir, config)
    claim = try_claim(path)
    if claim is None:
        return HeldElsewhere(describe_owner(path))
    with claim, cell_threads(config.train.threads):
        if (done := finished_record(path, config)) is not None:  # by another runner, meanwhile
            return done
        if (rescored := _score_without_training(path, config, shared, log, prefix)) is not None:
            return rescored
        missing = _incomplete_pieces(path, config)
        kept = make_way_for(path, config)  # the cell is ours now: keep what is there
        if kept is not None:
            log(f"{prefix}: {kept}")
        if missing is not None and resume_path(path).exists():  # the final state: no epoch runs
            log(f"{prefix}: finished earlier without {missing}; completing it from its weights")
        else:
            if missing is not None:
                log(f"{prefix}: finished earlier without {missing}; its weights were not kept")
            log(
                f"{prefix}: training {config.model} on {config.dataset} ({config.arch} "
                f"networks, {config.train.epochs} epochs)"
            )
        record = run_cell(config, shared, log, out_dir, tracker_factory())
        write_record(path, record)
        # a failed or incomplete cell keeps its rolling state: its rerun need not train again
        if record["status"] == "ok" and not record["incomplete"]:
            resume_path(path).unlink(missing_ok=True)
        return record


def _incomplete_pieces(path: Path, config: RunConfig) -> str | None:
    """What an ok record of this very config lacks (its `incomplete` pieces), or None."""
    record = read_record(path)
    if record is None or record["status"] != "ok" or not record["incomplete"]:
        return None
    if record["config_hash"] != config.config_hash():
        return None
    return ", ".join(sorted(record["incomplete"]))


def _score_without_training(path: Path, config: RunConfig, shared, log: Log, prefix: str):
    """A finished cell whose checkpoint trains exactly what `config` trains (only evaluation
    settings differ: a sampler, n_gen, FID on) is scored again from it, not retrained."""
    checkpoint = path.with_suffix(CHECKPOINT_SUFFIX)
    record = read_record(path)
    if record is None or record["status"] != "ok" or not checkpoint.exists():
        return None
    if record["config_hash"] == config.config_hash():  # this config, incomplete: completed
        return None  # by the run itself, from its kept weights
    try:  # the metadata first: a checkpoint of other training is not loaded at all
        metadata = read_metadata(checkpoint)
        stored = RunConfig.model_validate_json(metadata["config"])
    except (CheckpointError, ValueError, KeyError):
        return None
    # the hash as written beside the weights: a checkpoint of an older vaebench, whose config
    # lacks settings added since (at their defaults now), is still the record's
    if metadata.get("config_hash") != record["config_hash"] or not same_training(stored, config):
        return None
    try:
        loaded = load_checkpoint(checkpoint, resolve_device(config.train.device))
        return score_as(path, record, checkpoint, loaded, config, shared, log, prefix)
    except Exception as error:  # noqa: BLE001 - then it is trained, as before
        log(f"{prefix}: scoring from its checkpoint failed ({one_line(error)}); training it")
        return None


def report_outcome(prefix: str, outcome: dict | HeldElsewhere, log: Log) -> None:
    if isinstance(outcome, HeldElsewhere):
        log(f"{prefix}: being trained by {outcome.owner} (same results folder), left to it")
    else:
        _report_cell(prefix, outcome, log)


def update_metrics(record: dict, scores, chosen: set[str]) -> None:
    stamp = {"at": now_iso(), "code": code_version()}
    for key in sorted(chosen):
        if key in scores.metrics:
            record["metrics"][key] = float(scores.metrics[key])
            record["unavailable"].pop(key, None)
            record["provenance"][key] = dict(stamp)
        else:
            record["metrics"].pop(key, None)
            record["unavailable"][key] = scores.unavailable[key]
            record["provenance"].pop(key, None)
    if any(k.startswith("gen/") for k in chosen):
        record["sampler"] = scores.sampler
    if any(switch_of(k) == "fid" and k in scores.metrics for k in chosen):
        record["distribution"] = scores.distribution
    if any(switch_of(k) == "classifier" and k in scores.metrics for k in chosen):
        record["classifier"] = scores.classifier


def score_as(path, record, checkpoint, loaded, target: RunConfig, shared, log, prefix) -> dict:
    """Turn a finished cell's record into the record of `target`, a config that trains the same
    model with other evaluation settings (a sampler, n_gen, ...): every metric is computed
    again from the checkpoint; training, its history and timings stay. The record it was is
    copied to `history/`; the checkpoint is rewritten with `target` (the same tensors)."""
    model, config, params = loaded
    assert same_training(config, target)
    device = resolve_device(target.train.device)
    data = shared.data(target)
    scores = score(target, model, params, data, shared, device)
    kept = copy_to_history(path, record)
    record = json.loads(json.dumps(record))
    record["metrics"], record["unavailable"] = {}, {}
    record["provenance"], record["distribution"], record["classifier"] = {}, None, None
    update_metrics(record, scores, set(scores.metrics) | set(scores.unavailable))
    record["config"] = target.model_dump(mode="json")
    record["config_hash"] = target.config_hash()
    record["suite"] = target.suite
    record["timings"].update(scores.timings)
    save_checkpoint(checkpoint, model, target, data.shape)
    write_grids(path, scores.grids)
    record = Record.parse(record, str(path)).as_dict()
    write_record(path, record)
    shared.settings.update_run(record, log)
    changed = {
        k: v for k, v in target.eval.model_dump().items() if v != config.eval.model_dump()[k]
    }
    settings = ", ".join(f"eval.{k}={v}" for k, v in changed.items())
    log(
        f"{prefix}: scored from its checkpoint with {settings} (no retraining); the record "
        f"before is kept in {kept}"
    )
    return record
