"""Result records: one flat, typed JSON per cell, written atomically at a deterministic path.

`Record` is the one shape of a record, whoever reads it (run/resume, report, compare, the W&B
source): it validates, migrates older schema versions, and refuses anything else with one line
saying why. Names that become file names (suite, model) must be slugs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from benchmark import files
from benchmark.config import SLUG, RunConfig
from benchmark.environment import code_version
from benchmark.records.cellfiles import (
    IMAGE,
    MOVED_WITH_THE_RECORD,
    RECORD,
    CellFiles,
    is_in_history,
    run_folder,
)
from benchmark.records.record_parts import DatasetInfo, Environment, Measured

SCHEMA_VERSION = 2


def _name_the_tracker(record: dict[str, Any]) -> dict[str, Any]:
    """1 -> 2: `wandb_run` ({"path", "mode"}) became the tracker-neutral `tracker_run`."""
    record = dict(record)
    run = record.pop("wandb_run", None)
    record["tracker_run"] = {"tracker": "wandb", **run} if run else None
    return record


# schema_version -> the function that lifts a record of that version to the next one
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _name_the_tracker}


class RecordError(ValueError):
    """A file that is not a valid record; the message is one line naming the file."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int
    status: Literal["ok", "failed"]
    error: str | None = None
    suite: str = Field(pattern=SLUG)
    model: str = Field(pattern=SLUG)
    dataset: str = Field(min_length=1)  # a name, a path or a hub id: file names use its slug
    seed: int = Field(ge=0, le=2**32 - 1)
    config: RunConfig  # the cell's resolved config, as it trained and was scored
    config_hash: str
    metrics: dict[str, float]
    unavailable: dict[str, str] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    environment: Environment = Field(default_factory=Environment)
    dataset_info: DatasetInfo = Field(default_factory=DatasetInfo)
    training: dict[str, Any] = Field(default_factory=dict)
    # which sampler made gen/: name, settings, fit time and what its fit measured (absent in
    # records written before samplers existed: those gen/ numbers came from each family's
    # fixed prior, N(0, I) or uniform codes)
    sampler: dict[str, Any] | None = None
    # LPIPS's backbone and version, and its weights by the SHA-256 of their tensors
    lpips: dict[str, Any] | None = None
    # how gen/fid, gen/kid and recon/fid were made (features, weights, set sizes, KID subset)
    distribution: dict[str, Any] | None = None
    # the dataset's own classifier behind recon/cfd, gen/cfd, gen/precision and gen/recall:
    # its recipe, test accuracy and floor, weights' SHA-256, k and the set sizes
    classifier: dict[str, Any] | None = None
    # per metric key: when and by which code version it was computed ({"at": ..., "code": ...});
    # `vaebench evaluate` updates the entries of the metrics it recomputes
    provenance: dict[str, dict[str, str]] = Field(default_factory=dict)
    # the cell's tracker run ({"tracker": "wandb", "path": "entity/project/id", "mode":
    # "online" | "offline"}), so that re-scoring can update it; None when tracking was off
    tracker_run: dict[str, str] | None = None
    # pieces that failed after the model had trained (`checkpoint`, `steps`, `images`,
    # `sampler`, `evaluation`, or a metric key), with the reason: the cell is `ok` with all
    # else it measured, and a rerun fills these in from its kept weights without training
    incomplete: dict[str, str] = Field(default_factory=dict)
    created_at: str

    def feature_networks(self) -> dict[str, str]:
        """The pretrained or trained networks behind its numbers, by provider: {"lpips":
        "lpips-vgg16 sha256:…", "fid": ..., "classifier": "sha256:…"}; numbers of the same
        metric from different networks do not compare."""
        networks = {}
        if self.lpips and self.lpips.get("weights"):
            networks["lpips"] = self.lpips["weights"]
        if self.distribution and self.distribution.get("weights"):
            networks["fid"] = self.distribution["weights"]
        if self.classifier and self.classifier.get("sha256"):
            networks["classifier"] = f"sha256:{self.classifier['sha256'][:16]}"
        return networks

    @classmethod
    def ok(
        cls,
        config: RunConfig,
        measured: Measured,
        *,
        training: dict[str, Any],
        dataset_info: dict[str, Any],
        environment: dict[str, Any],
        timings: dict[str, float],
        tracker_run: dict[str, str] | None = None,
        incomplete: dict[str, str] | None = None,
    ) -> Record:
        """A cell that trained: what scoring measured, each metric stamped with its provenance;
        `incomplete`: the pieces after training that failed (a rerun completes them)."""
        created_at = now_iso()
        stamp = {"at": created_at, "code": code_version()}
        return cls._of(
            config,
            "ok",
            created_at,
            **measured.model_dump(),
            provenance={key: dict(stamp) for key in measured.metrics},
            training=training,
            dataset_info=dataset_info,
            environment=environment,
            timings=timings,
            tracker_run=tracker_run,
            incomplete=dict(incomplete or {}),
        )

    @classmethod
    def failed(
        cls,
        config: RunConfig,
        error: str,
        *,
        dataset_info: dict[str, Any] | None = None,
        environment: dict[str, Any] | None = None,
        timings: dict[str, float] | None = None,
        tracker_run: dict[str, str] | None = None,
    ) -> Record:
        """A cell that raised or diverged, with what was known when it did (a rerun retries)."""
        return cls._of(
            config,
            "failed",
            now_iso(),
            error=error,
            dataset_info=dataset_info or {},
            environment=environment or {},
            timings=timings or {},
            tracker_run=tracker_run,
        )

    @classmethod
    def _of(cls, config: RunConfig, status: str, created_at: str, **parts: Any) -> Record:
        """Through validation, as a record read from disk is (a bad value fails here, not in
        the reader of a written file)."""
        return cls.parse(
            {
                "schema_version": SCHEMA_VERSION,
                "status": status,
                "suite": config.suite,
                "model": config.model,
                "dataset": config.dataset,
                "seed": config.seed,
                "config": config.model_dump(mode="json"),
                "config_hash": config.config_hash(),
                "metrics": {},
                "created_at": created_at,
                **parts,
            }
        )

    @classmethod
    def parse(cls, data: Any, where: str = "record") -> Record:
        """Validate (after migrating an older schema version) or raise RecordError."""
        if not isinstance(data, dict):
            raise RecordError(f"{where}: not a JSON object")
        version = data.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise RecordError(f"{where}: unknown schema_version {version!r}")
        while version < SCHEMA_VERSION:
            if version not in MIGRATIONS:
                raise RecordError(f"{where}: schema_version {version} cannot be migrated")
            data = {**MIGRATIONS[version](data), "schema_version": version + 1}
            version += 1
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "record"
            raise RecordError(f"{where}: {field}: {first['msg']}") from None

    @classmethod
    def read(cls, path: str | os.PathLike) -> Record:
        try:
            data = json.loads(Path(path).read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            reason = type(error).__name__ if isinstance(error, OSError) else "not JSON"
            raise RecordError(f"{path}: {reason}") from None
        return cls.parse(data, str(path))

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def write(self, path: Path) -> None:
        """Atomically (never a half-written record), inside the cell's run folder, never
        through a symlink (benchmark/files.py)."""
        text = json.dumps(self.as_dict(), indent=2, sort_keys=False, allow_nan=True) + "\n"
        files.write_text(path, text, run_folder(path))

    def validated(self, where: str = "record") -> Record:
        """The record again through validation, after fields were changed in place."""
        return Record.parse(self.as_dict(), where)

    @property
    def finished(self) -> bool:
        """ok with nothing left incomplete: a run skips it."""
        return self.status == "ok" and not self.incomplete


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def remove_stale_temporaries(path: Path) -> None:
    """The temporary files a killed writer of `path` left (`.NAME.*.tmp*`). Only for a writer
    that owns `path` now (the cell's claim holder, the report's writer)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):
        stale.unlink(missing_ok=True)


def read_record(path: Path) -> Record | None:
    """The record at `path`, or None when there is none or it is not valid."""
    try:
        return Record.read(path)
    except RecordError:
        return None


def finished_record(cell: CellFiles, config: RunConfig) -> Record | None:
    """The cell's record when it is done: `ok`, with this config hash, nothing left incomplete
    (failed ones rerun; incomplete ones are completed from their kept weights)."""
    record = read_record(cell.record)
    if record and record.finished and record.config_hash == config.config_hash():
        return record
    return None


def make_way_for(cell: CellFiles, config: RunConfig) -> str | None:
    """Before a cell is trained with `config`, what is at its record's path is kept, never
    overwritten unseen: a file that is not a valid record is renamed `NAME.invalid-TIMESTAMP`;
    a record of another configuration moves, with its steps and images, to
    `history/CELL.CONFIGHASH.*`. A killed writer's temporaries go. Returns a line saying what
    was kept where, or None. (A failed record of this very config is simply retried.)"""
    path = cell.record
    remove_stale_temporaries(path)
    if not path.exists():
        return None
    try:
        record = Record.read(path)
    except RecordError:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = path.with_name(f"{path.name}.invalid-{stamp}")
        os.replace(path, aside)
        return f"{path.name} was not a valid record; kept as {aside.name}"
    if record.config_hash == config.config_hash():
        return None
    history = _into_history(cell, record.config_hash, MOVED_WITH_THE_RECORD, os.replace)
    return f"the record of another configuration is kept in {history}"


def copy_to_history(cell: CellFiles, record: Record) -> Path:
    """Keep a copy of a record (and its images) in `history/` before it is changed into the
    record of another configuration of the same trained cell (`vaebench evaluate --sampler`).
    Its steps and checkpoint stay: they still belong to the cell."""
    root = cell.root
    return _into_history(cell, record.config_hash, (), lambda a, b: files.copy_file(a, b, root))


def _into_history(cell: CellFiles, config_hash: str, also: tuple[str, ...], transfer) -> Path:
    """`transfer` (move or copy) the cell's record, its images and the companions ending in
    `also` to `history/CELL.CONFIGHASH.*`."""
    files.make_folder(cell.history, cell.root)  # never through a planted link
    earlier = cell.in_history(config_hash)
    for companion in cell.record.parent.glob(f"{cell.name}.*"):
        suffix = companion.name[len(cell.name) :]
        if suffix == RECORD or suffix in also or suffix.endswith(IMAGE):
            transfer(companion, earlier.file(suffix))
    return cell.history


def iter_records(
    directory: str | os.PathLike,
    warn: Callable[[str], None] | None = None,
    include_history: bool = False,
) -> Iterator[tuple[Path, Record]]:
    """(path, record) for every valid record under `directory`. A JSON file that is a record in
    name only (corrupt, binary, not an object, incomplete, unsafe names) is skipped with one
    warning line naming it; other JSON files (perf.json, sweep.json, baselines) are not records
    and are skipped silently. Earlier configurations (`history/`) only on request."""
    root = Path(directory)
    for path in sorted(root.rglob("*.json")):
        if not include_history and is_in_history(path, root):
            continue
        try:
            yield path, Record.read(path)
        except RecordError as error:
            if warn is not None and _looks_like_a_record(path):
                warn(f"vaebench: warning: skipped {error}")


def _looks_like_a_record(path: Path) -> bool:
    """Under a results/ folder, or a JSON object that says it is one."""
    if "results" in path.parts:
        return True
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "schema_version" in data and "metrics" in data


def warn_on_stderr(message: str) -> None:
    """How readers name the files they skip: one line on stderr."""
    print(message, file=sys.stderr, flush=True)


def load_records(
    directory: str | os.PathLike, warn: Callable[[str], None] | None = warn_on_stderr
) -> list[Record]:
    """Every valid record under `directory` (a run's --out, its results/ folder, or any
    subfolder); the invalid ones are named on stderr."""
    return [record for _, record in iter_records(directory, warn)]
