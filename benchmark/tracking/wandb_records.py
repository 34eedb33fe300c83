"""W&B edits after the fact: a re-scored record pushed to its finished run (`update_run`);
the model artifact's name and its superseded versions pruned. `wandb_tracker.py` streams runs,
`wandb_report.py` reads them back for a report; these three modules are the only ones that
import wandb.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from benchmark.tracking.base import flat_config, summary_values

if TYPE_CHECKING:
    from benchmark.records.results import Record

TRACKER = "wandb"  # how a record's `tracker_run` names this tracker
Log = Callable[[str], None]


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
        for key, value in flat_config(record.config).items():
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
