"""Where a report's inputs come from: a results folder here, or a tracker's runs (a tracker
plug-in's `report_source`, e.g. `tracking/wandb_report.py`).

Both give the same `ReportInputs`: records shaped like the local JSON records, per-step training
histories and, for local runs, the image grids the runner saved beside each record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark import files
from benchmark.records.cellfiles import CellFiles, is_in_history
from benchmark.records.results import Record, iter_records, warn_on_stderr

CellKey = tuple[str, str, int]  # dataset, model, seed


@dataclass
class ReportInputs:
    records: list[Record]
    histories: dict[CellKey, pd.DataFrame] = field(default_factory=dict)
    grids: dict[CellKey, dict[str, Path]] = field(default_factory=dict)
    earlier_configs: int = 0  # records of earlier configurations kept in history/ folders


def cell_key(record: Record) -> CellKey:
    return record.dataset, record.model, int(record.seed)


def from_directory(directory: str | Path) -> ReportInputs:
    inputs = ReportInputs(records=[])
    inputs.earlier_configs = sum(
        is_in_history(path, directory) for path, _ in iter_records(directory, include_history=True)
    )
    for path, record in iter_records(directory, warn=warn_on_stderr):
        inputs.records.append(record)
        key = cell_key(record)
        cell = CellFiles(path)
        if cell.steps.exists():
            inputs.histories[key] = pd.read_csv(cell.steps)
        grids = {name: cell.image(name) for name in ("reconstructions", "samples")}
        inputs.grids[key] = {name: p for name, p in grids.items() if p.exists()}
    return inputs


def dump_records(inputs: ReportInputs, folder: Path) -> None:
    """Keep the records a W&B report was built from, beside it (a report is reproducible)."""
    for record in inputs.records:
        dataset, model, seed = cell_key(record)
        run = record.environment.wandb_run
        name = f"{run or f'{dataset}-{model}-seed{seed}'}.json"
        text = json.dumps(record.as_dict(), indent=2)
        files.write_text(folder / name.replace("/", "_"), text, folder.parent)
