"""Every check of a command's input that needs no work done: one line and exit 2 each, before
anything trains or is written. `vaebench run` runs them all in `check_run`, under `--dry-run`
too; what they check that pydantic cannot (the config's own fields are checked when the suite
is resolved): the run's options, the tracker's and the executor's (devices, SLURM), the data
mirror, the results folder. Whether the install has every piece a cell needs after training
is pre-flight's (`preflight.py`), before real work only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmark.errors import UserInputError
from benchmark.running.executors import EXECUTORS
from benchmark.tracking import TRACKERS, agent_plugin


def check_run(args, suite, cells, out: Path) -> int:
    """`vaebench run ARGS` for `suite` (its `cells`) into `out`; returns the epochs between
    rolling checkpoints."""
    checkpoint_every = _run_options(args, suite, len(cells))
    TRACKERS.get(args.tracker).check_run_options(args)
    EXECUTORS.get(args.executor).check(args, suite, cells)
    check_mirror(args.data_mirror)
    check_writable(out, create=not args.dry_run)
    return checkpoint_every


def _run_options(args, suite, n_cells: int) -> int:
    """`run`'s own options; returns the epochs between rolling checkpoints."""
    if agent_plugin() is not None and n_cells != 1:
        raise UserInputError(
            f"under a sweep agent a run is one cell, got {n_cells}: sweep over models, "
            "datasets and seeds, or fix them in the sweep's command"
        )
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise UserInputError("--checkpoint-every must be 0 (none) or a number of epochs")
    checkpoint_every = (
        suite.checkpoint_every if args.checkpoint_every is None else args.checkpoint_every
    )
    if args.jobs > 1 and args.executor != "local":
        raise UserInputError("--jobs is for the local executor; SLURM runs one job per cell")
    return checkpoint_every


def check_writable(folder: Path, create: bool = True) -> None:
    """A results folder we cannot write to fails now, not after the first cell has trained.
    `create=False` (a dry run): the folder, or the nearest one above it that exists, must be
    writable; nothing is made."""
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"cannot write results to {folder}: it is a file, not a folder")
    if not create:
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UserInputError(f"cannot write results to {folder}: {existing} is not writable")
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".vaebench-write-check-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserInputError(f"cannot write results to {folder}: {reason}") from None


def check_mirror(mirror: str | os.PathLike | None) -> None:
    """--data-mirror (or $VAEBENCH_DATA_MIRROR) names a folder that exists: a typo there would
    otherwise send every dataset to the hub."""
    from benchmark.data.loading import MIRROR_ENV  # the data code: only when a mirror is named

    named, where = (mirror, "--data-mirror") if mirror else (os.environ.get(MIRROR_ENV), MIRROR_ENV)
    if not named:
        return
    if not Path(named).expanduser().is_dir():
        what = "a file, not a folder" if Path(named).expanduser().exists() else "no such folder"
        raise UserInputError(f"{where} {named}: {what}")


def check_output_file(option: str, path: Path) -> None:
    """A file vaebench is asked to write: its folder exists, and it is not itself a folder
    (refused before any work, one line)."""
    if path.is_dir():
        raise UserInputError(f"{option} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UserInputError(f"{option} {path}: no such folder {path.parent}")
