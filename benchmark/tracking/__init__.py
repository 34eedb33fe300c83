"""Experiment trackers, each one module registered by name (`TRACKERS`): the interface a cell
talks to and what a plug-in gives the command line are `base.py`.

- `wandb_tracker.py` (with `wandb_records.py`, `wandb_report.py`): Weights & Biases, the default;
- `mlflow_tracker.py`: MLflow, against a tracking server or a local sqlite store;
- `off`: no tracking.

`vaebench run --tracker NAME` picks one; the record's `tracker_run` names the tracker of its run,
so re-scoring (`update_run`) goes back to the same tracker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.registry import Registry
from benchmark.tracking import mlflow_tracker, wandb_tracker
from benchmark.tracking.base import Log, OffPlugin, TrackerPlugin

if TYPE_CHECKING:
    from benchmark.records.results import Record

DEFAULT = wandb_tracker.PLUGIN.name
TRACKERS: Registry[TrackerPlugin] = Registry("tracker")
for _plugin in (wandb_tracker.PLUGIN, mlflow_tracker.PLUGIN, OffPlugin()):
    TRACKERS.add(_plugin.name, _plugin)


def update_run(record: Record, log: Log) -> bool:
    """After a re-score: the record's run, in whichever tracker its `tracker_run` names, gets
    its new numbers. False when it names none (tracking was off) or one not installed here."""
    where = record.tracker_run
    if not where or where.get("tracker") not in TRACKERS:
        return False
    return TRACKERS.get(where["tracker"]).update_run(record, log)


def agent_plugin() -> TrackerPlugin | None:
    """The tracker whose sweep agent launched this process, if any."""
    return next((plugin for plugin in TRACKERS.values() if plugin.in_agent()), None)
