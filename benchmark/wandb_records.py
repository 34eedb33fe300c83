"""A record as Weights & Biases holds it, and W&B edits after the fact: the flat run config
(`train.epochs`, `betavae.beta`), the run summary, the model artifact's name; a re-scored
record pushed to its finished run (`update_run`); superseded artifact versions pruned.
`tracking.py` streams runs; these two modules are the only ones that import wandb.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmark.config import RunConfig
from benchmark.results import Record

TRACKER = "wandb"  # how a record's `tracker_run` names this tracker
Log = Callable[[str], None]


def flat_config(config: RunConfig) -> dict[str, Any]:
    """Readable in the W&B UI and equal to the names sweeps and `--set` use: `train.epochs`,
    `betavae.beta`, ..."""
    values = config.model_dump(mode="json")
    flat: dict[str, Any] = {}
    for key, value in values.items():
        section = config.model if key == "params" else key
        if isinstance(value, dict):
            flat.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    flat["config_hash"] = config.config_hash()
    return flat


def summary_values(record: Record) -> dict[str, Any]:
    """What a record puts in its run's summary: the metrics, the reasons for the unavailable
    ones, and how gen/, the FID and the classifier numbers were made (for reports built from
    W&B)."""
    values: dict[str, Any] = dict(record.metrics)
    values.update({f"unavailable/{k}": why for k, why in record.unavailable.items()})
    made = ("sampler", "distribution", "classifier")
    values.update({k: getattr(record, k) for k in made if getattr(record, k) is not None})
    return values


def update_run(record: Record, log: Log) -> bool:
    """After a re-score: the cell's online W&B run gets the record's summary and config (the
    run is finished; W&B's public API writes to it). Offline runs are left as their log has
    them. A failure is one line; the local record stands either way."""
    where = record.tracker_run
    if not where or where.get("tracker") != TRACKER or where.get("mode") != "online":
        return False
    try:
        import wandb

        run = wandb.Api().run(where["path"])
        config = RunConfig.model_validate(record.config)
        for key, value in flat_config(config).items():
            run.config[key] = value
        run.update()
        run.summary.update(summary_values(record))
    except Exception as error:  # noqa: BLE001 - W&B must never fail a re-score
        log(f"W&B: run {where['path']} not updated ({type(error).__name__}: {error})")
        return False
    return True


def model_artifact_name(cell_id: str) -> str:
    return f"model-{cell_id}"


def prune_superseded(run, name: str, log: Log) -> int:
    """Delete the versions of artifact `name` that no alias points to any more."""
    import wandb

    path = f"{run.entity}/{run.project}/{name}"
    deleted = 0
    for version in wandb.Api().artifacts("model", path):
        if not version.aliases:
            version.delete()
            deleted += 1
    if deleted:
        log(f"W&B: deleted {deleted} superseded version(s) of {name}")
    return deleted
