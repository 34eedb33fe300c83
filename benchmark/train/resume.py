"""Resume inside a cell: a rolling checkpoint taken at epoch boundaries.

Every `checkpoint_every` epochs (and after the last one) the cell's training state goes to
`CELL.resume.pt` beside its record: the model's state dict (EMA buffers included), every
optimiser and scheduler of the trainer (VAEGAN's coupled trainer has three of each), the
torch (CPU and CUDA), numpy and Python RNG states, the epochs done, the per-step history and
the training seconds so far. A cell killed by SIGKILL, SIGTERM, a lost node or a SLURM
preemption restarts from it when it is run again, and ends with the record an uninterrupted
run writes: the RNG states at an epoch boundary fix the next epoch's shuffling and noise.

The file is written to a temporary and renamed (a kill mid-write leaves the previous one),
read with `torch.load(weights_only=True)` (no code runs from it), and used only when its config
hash is the cell's. It goes once the cell's `ok` record is written; a failed cell keeps it, so
that a rerun after a crash in evaluation does not train again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark import files
from benchmark.config import RunConfig
from benchmark.records.cellfiles import run_folder

FORMAT = "vaebench-resume/1"


@dataclass
class TrainingState:
    """Where training stood after `epochs_done` epochs."""

    epochs_done: int
    model: dict[str, torch.Tensor]
    optimizers: dict[str, dict] = field(default_factory=dict)  # trainer attribute -> state
    schedulers: dict[str, dict] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


def trainer_parts(trainer) -> tuple[dict[str, Any], dict[str, Any]]:
    """(optimisers, schedulers) of a pythae trainer, by attribute name: `optimizer`, or
    `encoder_optimizer`, `decoder_optimizer`, `discriminator_optimizer` for VAEGAN's."""
    optimizers, schedulers = {}, {}
    for name, value in vars(trainer).items():
        if isinstance(value, torch.optim.Optimizer):
            optimizers[name] = value
        elif isinstance(
            value,
            (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau),
        ):
            schedulers[name] = value
    return optimizers, schedulers


def capture_rng() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def capture(trainer, model: torch.nn.Module, epochs_done: int, history, seconds: float):
    """The state after `epochs_done` epochs. `trainer` None: the weights alone (what a cell
    keeps after its last epoch, when its checkpoint could not be written: no epoch is left to
    run, so no optimiser is needed)."""
    optimizers, schedulers = trainer_parts(trainer) if trainer is not None else ({}, {})
    return TrainingState(
        epochs_done=epochs_done,
        model={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        optimizers={k: _to_cpu(v.state_dict()) for k, v in optimizers.items()},
        schedulers={k: v.state_dict() for k, v in schedulers.items()},
        rng=capture_rng(),
        steps=list(history.steps),
        epochs=list(history.epochs),
        train_seconds=seconds,
    )


def restore(trainer, model: torch.nn.Module, state: TrainingState) -> None:
    """Into a trainer pythae has just prepared (fresh optimisers, reseeded RNGs)."""
    model.load_state_dict(state.model)
    optimizers, schedulers = trainer_parts(trainer)
    if set(optimizers) != set(state.optimizers) or set(schedulers) != set(state.schedulers):
        raise ValueError(
            f"the rolling checkpoint's optimisers {sorted(state.optimizers)} do not match the "
            f"trainer's {sorted(optimizers)}"
        )
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state.optimizers[name])  # moves state to the params' device
    for name, scheduler in schedulers.items():
        scheduler.load_state_dict(state.schedulers[name])
    restore_rng(state.rng)


def _to_cpu(value):
    if torch.is_tensor(value):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


class RollingCheckpoint:
    """The rolling checkpoint of one cell: `load()` before training, `due()`/`save()` at each
    epoch end, `discard()` once the cell's record is written."""

    def __init__(self, path: Path, config: RunConfig, every: int, log=None) -> None:
        self.path = path
        self.config = config
        self.every = every  # 0: never written (an existing one is still resumed from)
        self.log = log or (lambda message: None)

    def due(self, epochs_done: int) -> bool:
        if self.every <= 0:
            return False
        return epochs_done % self.every == 0 or epochs_done == self.config.train.epochs

    def save(self, state: TrainingState) -> None:
        """A checkpoint that cannot be written (disk full, no such folder) does not stop the
        cell: it says so once and trains on without rolling checkpoints."""
        try:
            self.write(state)
        except OSError as error:
            self.log(f"    rolling checkpoint not written ({error}); training goes on without")
            self.every = 0

    def write(self, state: TrainingState) -> None:
        """Atomically, whatever `every` says; raises OSError when it cannot be written."""
        payload = {
            "format": FORMAT,
            "config_hash": self.config.config_hash(),
            **vars(state),
        }
        # fsynced before it replaces the previous state (benchmark/files.py)
        files.write_with(
            self.path, lambda temporary: torch.save(payload, temporary), run_folder(self.path)
        )

    def load(self) -> tuple[TrainingState | None, str | None]:
        """(state, None) to resume from; (None, why not) when there is a file that cannot be
        used (another config, unreadable); (None, None) when there is none."""
        for stale in self.path.parent.glob(f".{self.path.name}.*tmp*"):  # a killed write
            stale.unlink(missing_ok=True)
        if not self.path.exists():
            return None, None
        try:
            payload = files.load_tensors(self.path)
        except files.RefusedFile as error:  # truncated, foreign or unsafe
            return None, f"not a usable rolling checkpoint: {error}"
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            return None, f"{self.path.name} is not a vaebench rolling checkpoint"
        if payload.get("config_hash") != self.config.config_hash():
            return None, f"{self.path.name} belongs to another configuration"
        fields = {k: v for k, v in payload.items() if k not in ("format", "config_hash")}
        try:
            state = TrainingState(**fields)
        except TypeError as error:
            return None, f"{self.path.name} is incomplete ({error})"
        if not 0 < state.epochs_done <= self.config.train.epochs:
            return None, f"{self.path.name} holds epoch {state.epochs_done}"
        return state, None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
