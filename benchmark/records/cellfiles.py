"""Where a cell's files live. `CellFiles` is the only place that spells out the layout:

    OUT/results/SUITE/CELL.json              the record
                      CELL.safetensors       its final weights (`vaebench evaluate` reads them)
                      CELL.resume.pt         the rolling checkpoint while it trains
                      CELL.steps.csv         per-step training components
                      CELL.claim             the claim of the runner training it
                      CELL.NAME.png          image grids (reconstructions, samples)
                      history/CELL.HASH.*    the same files of an earlier configuration

`CELL` is `RunConfig.cell_id` (`mnist-vaegan-seed0`); `HASH` the earlier record's config hash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotation only: the layout needs a config's suite and cell id
    from benchmark.config import RunConfig

RESULTS = "results"
HISTORY = "history"
RECORD = ".json"
CHECKPOINT = ".safetensors"
RESUME = ".resume.pt"
STEPS = ".steps.csv"
CLAIM = ".claim"
IMAGE = ".png"
# what moves to history/ with the record when another configuration of the cell is trained
MOVED_WITH_THE_RECORD = (STEPS, CHECKPOINT)


@dataclass(frozen=True)
class CellFiles:
    """The files of one cell, all named from its record's path."""

    record: Path

    @classmethod
    def of(cls, out_dir: str | os.PathLike, config: RunConfig) -> CellFiles:
        return cls(Path(out_dir) / RESULTS / config.suite / f"{config.cell_id}{RECORD}")

    @property
    def name(self) -> str:
        """`CELL`, or `CELL.HASH` in history/."""
        return self.record.name[: -len(RECORD)]

    def file(self, suffix: str) -> Path:
        """`CELL` + suffix, beside the record."""
        return self.record.with_name(self.name + suffix)

    @property
    def checkpoint(self) -> Path:
        return self.file(CHECKPOINT)

    @property
    def resume(self) -> Path:
        return self.file(RESUME)

    @property
    def steps(self) -> Path:
        return self.file(STEPS)

    @property
    def claim(self) -> Path:
        return self.file(CLAIM)

    def image(self, grid: str) -> Path:
        return self.file(f".{grid}{IMAGE}")

    @property
    def root(self) -> Path:
        return run_folder(self.record)

    @property
    def history(self) -> Path:
        return self.record.parent / HISTORY

    def in_history(self, config_hash: str) -> CellFiles:
        """The same cell's files of the configuration with `config_hash`, in history/."""
        return CellFiles(self.history / f"{self.name}.{config_hash}{RECORD}")


def run_folder(path: Path) -> Path:
    """The run folder (`--out`) a cell's file belongs to (OUT/results/SUITE/FILE, or
    OUT/results/SUITE/history/FILE): every write of a cell's files stays inside it."""
    return path.parents[3] if path.parent.name == HISTORY else path.parents[2]


def is_in_history(path: Path, root: str | os.PathLike) -> bool:
    """Whether a file under `root` is a record of an earlier configuration."""
    return HISTORY in path.relative_to(root).parts[:-1]
