"""`vaebench evaluate OUT`: re-score finished cells from their checkpoints, without retraining.

Each ok record with a checkpoint beside it is rebuilt (same config, same weights, same data),
scored by the very function a run uses (`cell.score`), and updated in place: the chosen
metrics (all by default), their unavailability reasons, the sampler and FID settings, and each
recomputed metric's provenance (when, which code version). The config and its hash do not
change, so `vaebench run` still sees the cell as finished.

`--sampler` scores generation with another sampler (the training is the same): the record
becomes the one `vaebench run --set eval.sampler=...` writes, config and hash included, every
metric computed again (`score_as`, which `vaebench run` also uses when a finished cell's config
differs only in `eval`); the record it was is copied to `history/`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from benchmark.config import RunConfig
from benchmark.errors import UserInputError, unknown_name
from benchmark.metrics.providers import PROVIDERS
from benchmark.metrics.registry import METRICS, SETS, switch_of
from benchmark.metrics.samplers import SAMPLERS
from benchmark.models import FAMILIES
from benchmark.records.cellfiles import CellFiles
from benchmark.records.claims import try_claim
from benchmark.records.results import Record, iter_records, warn_on_stderr
from benchmark.running.resources import MetricNetworks, RunSettings, SharedResources
from benchmark.running.scoring import score, score_as, update_metrics
from benchmark.running.suites import sampler_for
from benchmark.tracking.base import RunUpdater, no_update
from benchmark.train.checkpoints import CheckpointError, load_checkpoint, read_metadata
from benchmark.train.training import cell_threads, resolve_device

Log = Callable[[str], None]


def parse_metric_names(names: list[str] | None) -> set[str] | None:
    """`fid`, `gen/kid`, `recon/mse` -> the set of record keys; None: every metric."""
    if not names:
        return None
    keys = set()
    for name in names:
        prefix, _, metric = name.rpartition("/")
        if metric not in METRICS:
            raise unknown_name("metric", metric, list(METRICS))
        if prefix and prefix not in SETS:
            raise UserInputError(f"unknown evaluation set '{prefix}/' in '{name}': recon/ or gen/")
        keys |= {name} if prefix else {f"{s}/{metric}" for s in SETS}
    return keys


def parse_sampler_choice(text: str | None) -> str | dict[str, str] | None:
    """`gmm` (every family that can use it) or `betavae=gmm,vaegan=gmm` (per family)."""
    if not text:
        return None
    if "=" not in text:
        SAMPLERS.get(text)  # an unknown name: one line with a suggestion
        return text
    choice = {}
    for part in text.split(","):
        model, _, name = part.partition("=")
        choice[model.strip()] = name.strip()
    for model in choice:
        sampler_for(choice, model)  # unknown family, or a sampler it cannot use: one line
    return choice


def _sampler_of(choice: str | dict[str, str] | None, model: str) -> str | None:
    """The sampler `choice` gives this family's cells; None: theirs stays."""
    if isinstance(choice, dict):
        return choice.get(model)
    if choice is not None and choice in FAMILIES.get(model).samplers:
        return choice
    return None


def scoring_config(config: RunConfig, wanted: set[str] | None) -> RunConfig:
    """The config a cell is re-scored with: asking for a metric computes it, even where the
    run had it switched off (eval.fid: false)."""
    switches = {}
    if wanted is not None:
        asked = {switch_of(key) for key in wanted}
        switches = {
            p.name: p.enabled(config.eval) or p.name in asked
            for p in PROVIDERS.values()
            if p.has_switch(config.eval)  # one without a switch is on anyway
        }
    return config.model_copy(update={"eval": config.eval.model_copy(update=switches)})


def rescoring_configs(out_dir: Path, metrics: list[str] | None) -> list[RunConfig]:
    """The configs `rescore` would score the finished cells with (what `vaebench evaluate`
    provisions the pretrained networks for, before any work)."""
    wanted = parse_metric_names(metrics)
    return [
        scoring_config(record.config, wanted)
        for path, record in iter_records(out_dir)
        if record.status == "ok" and CellFiles(path).checkpoint.exists()
    ]


def rescore(
    out_dir: Path,
    metrics: list[str] | None = None,
    mirror: str | None = None,
    log: Log = print,
    networks: MetricNetworks | None = None,
    sampler: str | dict[str, str] | None = None,
    update_run: RunUpdater = no_update,
) -> list[Record]:
    """Re-score every ok cell under `out_dir` that has a checkpoint; returns the updated
    records. Cells without a checkpoint, of another config, or being trained are left alone.
    `update_run` pushes each updated record to the tracker run it names."""
    wanted = parse_metric_names(metrics)
    settings = RunSettings(mirror, networks or MetricNetworks(), update_run=update_run)
    shared = SharedResources(settings)
    updated = []
    for path, record in iter_records(out_dir, warn_on_stderr):
        cell = CellFiles(path)
        if record.status != "ok":
            continue
        if not cell.checkpoint.exists():
            log(f"{cell.name}: no checkpoint beside the record; kept as it is")
            continue
        claim = try_claim(cell)
        if claim is None:
            log(f"{cell.name}: being trained by another runner; left to it")
            continue
        threads = record.config.train.threads
        try:
            with cell_threads(threads):  # the numbers the run computed, with its thread count
                rescored = _rescore_one(cell, record, wanted, sampler, shared, log)
            updated.append(rescored)
        except CheckpointError as error:
            log(f"{cell.name}: {error}; kept as it is")
        finally:
            claim.release()
    return [r for r in updated if r is not None]


def _rescore_one(cell: CellFiles, record: Record, wanted, sampler, shared, log) -> Record | None:
    name = cell.name
    device = resolve_device(record.config.train.device)
    written = read_metadata(cell.checkpoint).get("config_hash")  # as saved, by whichever version
    if written != record.config_hash:
        log(f"{name}: the checkpoint is of another config ({written}); kept as it is")
        return None
    model, config, params = load_checkpoint(cell.checkpoint, device)
    new_sampler = _sampler_of(sampler, config.model)
    if sampler is not None and new_sampler is None:
        if isinstance(sampler, str):  # one name for all: say why this family keeps its own
            samplers = ", ".join(FAMILIES.get(config.model).samplers)
            log(f"{name}: {config.model} samples with {samplers}; its sampler stays")
        if wanted is None:  # nothing else was asked for
            return None
    if new_sampler is not None and new_sampler != config.eval.sampler:
        target = config.model_copy(
            update={"eval": config.eval.model_copy(update={"sampler": new_sampler})}
        )
        loaded = (model, config, params)
        return score_as(cell, record, loaded, target, shared, log, name)
    scoring = scoring_config(config, wanted)
    scores = score(scoring, model, params, shared.data(config), shared, device)
    chosen = set(scores.measured.metrics) | set(scores.measured.unavailable)
    if wanted is not None:
        chosen &= wanted
    update_metrics(record, scores.measured, chosen)
    record = record.validated(str(cell.record))
    record.write(cell.record)
    _log_rescored(name, record, chosen, log)
    shared.settings.update_run(record, log)
    return record


def _log_rescored(cell: str, record: Record, chosen: set[str], log: Log) -> None:
    shown = [k for k in sorted(chosen) if k in record.metrics]
    values = ", ".join(f"{k} {record.metrics[k]:.4g}" for k in shown[:4])
    more = f", ... ({len(shown) - 4} more)" if len(shown) > 4 else ""
    log(f"{cell}: re-scored {len(chosen)} metrics ({values + more if shown else 'none available'})")
