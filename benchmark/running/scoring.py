"""Scoring a trained model: its sampler fitted, every metric of docs/metrics.md computed
(`score`), the record's metrics updated from the scores (`update_metrics`), and a finished
cell's record turned into the record of another evaluation config from its checkpoint
(`score_as`). The one path for a cell that has just trained, for `vaebench evaluate` and for a
rerun whose config differs only in evaluation settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from benchmark import files
from benchmark.config import RunConfig, same_training
from benchmark.data.loading import ImageSplits
from benchmark.environment import code_version
from benchmark.errors import one_line
from benchmark.metrics.evaluation import evaluate
from benchmark.metrics.providers import PROVIDERS
from benchmark.metrics.registry import switch_of
from benchmark.metrics.samplers import fit_sampler
from benchmark.models import FAMILIES
from benchmark.records.cellfiles import CellFiles
from benchmark.records.results import Measured, Record, copy_to_history, now_iso
from benchmark.running.resources import SharedResources
from benchmark.train.checkpoints import save_checkpoint
from benchmark.train.training import resolve_device

DISABLED = "disabled by eval.%s=false"


@dataclass
class Scores:
    """What evaluating a trained model gives: what its record keeps (`measured`: metrics, the
    reasons for the unavailable ones, the sampler, FID and classifier settings), image grids,
    the time each part took, and the pieces that failed (`sampler`, `evaluation` or a metric
    key -> reason; empty when all worked)."""

    measured: Measured
    grids: dict[str, torch.Tensor]
    timings: dict[str, float]
    failed: dict[str, str] = field(default_factory=dict)


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
    loaded = {}
    for provider in PROVIDERS.values():  # each set-level metric, where it is on and loads
        it, reason = (
            provider.load(shared, config, data, device)
            if provider.enabled(config.eval)
            else (None, DISABLED % provider.name)
        )
        if it is None:
            unavailable.update(dict.fromkeys(provider.record_keys(), reason))
        else:
            loaded[provider.name] = it
    metric_failures: dict[str, str] = {}
    try:
        metrics, grids = evaluate(
            family,
            model,
            params,
            data.test,
            config.eval,
            sampler,
            loaded,
            failures=metric_failures,
        )
    except Exception as error:  # noqa: BLE001 - the model itself failed to evaluate
        metrics, grids, failed["evaluation"] = {}, {}, f"failed: {one_line(error)}"
    failed.update(metric_failures)
    unavailable.update(metric_failures)
    if sampler is None:  # the gen/ counterpart of every recon/ metric, with the reason
        gen = {f"gen/{key.split('/', 1)[1]}" for key in metrics if switch_of(key) is None}
        gen |= {key for name in loaded for key in PROVIDERS.get(name).record_keys(("gen",))}
        unavailable.update({key: f"{failed['sampler']} (the sampler)" for key in sorted(gen)})
    n_gen = (config.eval.n_gen or len(data.test)) if sampler is not None else 0
    settings = {
        provider.record_field: provider.settings(loaded[provider.name], len(data.test), n_gen)
        for provider in PROVIDERS.values()
        if provider.record_field and provider.name in loaded
    }
    timings = {
        "sampler_fit": sampler.fit_seconds if sampler is not None else 0.0,
        "eval": time.perf_counter() - eval_started,
    }
    measured = Measured(
        metrics=metrics,
        unavailable=unavailable,
        sampler=sampler.describe() if sampler is not None else None,
        **settings,
    )
    return Scores(measured, grids, timings, failed)


def update_metrics(record: Record, measured: Measured, chosen: set[str]) -> None:
    """The `chosen` metrics of `record` from `measured`, in place, each with its provenance."""
    stamp = {"at": now_iso(), "code": code_version()}
    for key in sorted(chosen):
        if key in measured.metrics:
            record.metrics[key] = float(measured.metrics[key])
            record.unavailable.pop(key, None)
            record.provenance[key] = dict(stamp)
        else:
            record.metrics.pop(key, None)
            record.unavailable[key] = measured.unavailable[key]
            record.provenance.pop(key, None)
    if any(k.startswith("gen/") for k in chosen):
        record.sampler = measured.sampler
    for provider in PROVIDERS.values():  # how a recomputed provider's numbers were made
        if provider.record_field and any(
            switch_of(k) == provider.name and k in measured.metrics for k in chosen
        ):
            field = provider.record_field
            setattr(record, field, getattr(measured, field))


def score_as(
    cell: CellFiles, record: Record, loaded, target: RunConfig, shared, log, prefix
) -> Record:
    """Turn a finished cell's record into the record of `target`, a config that trains the same
    model with other evaluation settings (a sampler, n_gen, ...): every metric is computed
    again from the checkpoint; training, its history and timings stay. The record it was is
    copied to `history/`; the checkpoint is rewritten with `target` (the same tensors)."""
    model, config, params = loaded
    assert same_training(config, target)
    device = resolve_device(target.train.device)
    data = shared.data(target)
    scores = score(target, model, params, data, shared, device)
    kept = copy_to_history(cell, record)
    record = record.model_copy(
        deep=True,
        update={
            "metrics": {},
            "unavailable": {},
            "provenance": {},
            **{p.record_field: None for p in PROVIDERS.values() if p.record_field},
            "config": target,
            "config_hash": target.config_hash(),
            "suite": target.suite,
        },
    )
    measured = scores.measured
    update_metrics(record, measured, set(measured.metrics) | set(measured.unavailable))
    record.timings.update(scores.timings)
    save_checkpoint(cell.checkpoint, model, target, data.shape)
    write_grids(cell, scores.grids)
    record = record.validated(str(cell.record))
    record.write(cell.record)
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


def write_grids(cell: CellFiles, grids: dict[str, torch.Tensor]) -> None:
    """Small PNG grids beside the cell's record, for the report."""
    from torchvision.utils import save_image

    for name, grid in grids.items():
        files.write_with(
            cell.image(name), lambda temporary, grid=grid: save_image(grid, temporary), cell.root
        )
