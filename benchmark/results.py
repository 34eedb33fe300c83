"""Result records: one flat, typed JSON per cell, written atomically at a deterministic path."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmark.config import RunConfig

SCHEMA_VERSION = 1


def record_path(out_dir: str | os.PathLike, config: RunConfig) -> Path:
    return Path(out_dir) / "results" / config.suite / f"{config.cell_id}.json"


def build_record(
    config: RunConfig,
    *,
    status: str,
    metrics: dict[str, float] | None = None,
    unavailable: dict[str, str] | None = None,
    error: str | None = None,
    timings: dict[str, float] | None = None,
    environment: dict[str, Any] | None = None,
    dataset_info: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "error": error,
        "suite": config.suite,
        "model": config.model,
        "dataset": config.dataset,
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
        "config_hash": config.config_hash(),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "unavailable": dict(unavailable or {}),
        "timings": {k: float(v) for k, v in (timings or {}).items()},
        "environment": environment or {},
        "dataset_info": dataset_info or {},
        "training": training or {},
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=2, sort_keys=False, allow_nan=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError):
        return None


def is_finished(path: Path, config: RunConfig) -> bool:
    """A cell is done when an `ok` record with the same config hash exists (failed ones rerun)."""
    record = read_record(path)
    return bool(
        record
        and record.get("status") == "ok"
        and record.get("config_hash") == config.config_hash()
    )


def iter_records(directory: str | os.PathLike) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(path, record) for every record under `directory` (other JSON files are skipped)."""
    for path in sorted(Path(directory).rglob("*.json")):
        record = read_record(path)
        if isinstance(record, dict) and "schema_version" in record and "metrics" in record:
            yield path, record


def load_records(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record under `directory` (a run's --out, its results/ folder, or any subfolder)."""
    return [record for _, record in iter_records(directory)]
