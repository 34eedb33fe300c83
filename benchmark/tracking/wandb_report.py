"""W&B runs read back as a report's records (`vaebench report --wandb ENTITY/PROJECT`), through
W&B's public API: the same `ReportInputs` as a results folder gives, each record validated as a
local one is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from pydantic import ValidationError

from benchmark.config import RunConfig
from benchmark.errors import UserInputError
from benchmark.records.results import SCHEMA_VERSION, Record, RecordError, warn_on_stderr
from benchmark.report.sources import ReportInputs, cell_key


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _mapping(value: Any) -> dict | None:
    """A nested summary value as a plain dict (the public API returns its own dict types)."""
    if isinstance(value, Mapping):
        return json.loads(json.dumps(dict(value), default=str))
    return None


def _hardware_of(logged: Any) -> dict:
    """The record's `hardware` from the run's `env.hardware` (runs logged before it: none)."""
    hardware = _mapping(logged)
    return {"hardware": hardware} if hardware else {}


def record_from_wandb(name: str, config: dict, summary: dict, state: str = "finished") -> dict:
    """A W&B run (config + summary, as the runner logged them) -> a record for the report."""
    summary = dict(summary)
    metrics = {
        k: v
        for k, v in ((k, _number(v)) for k, v in summary.items())
        if v is not None and k.startswith(("recon/", "gen/"))
    }
    status = summary.get("status") or ("ok" if state == "finished" else "failed")
    environment = {k[len("env.") :]: v for k, v in config.items() if k.startswith("env.")}
    nested, config_hash = config_from_flat(config)
    sampler = nested.get("eval", {}).get("sampler")
    return {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "error": summary.get("error") or (None if status == "ok" else f"W&B run state {state}"),
        "suite": config.get("suite", "wandb"),
        "model": config.get("model"),
        "dataset": config.get("dataset"),
        "seed": int(config.get("seed", 0)),
        "config": nested,
        "config_hash": config_hash,
        "metrics": metrics,
        "unavailable": {
            k[len("unavailable/") :]: v for k, v in summary.items() if k.startswith("unavailable/")
        },
        "timings": {
            k[len("timings/") :]: v
            for k, v in summary.items()
            if k.startswith("timings/") and _number(v) is not None
        },
        "environment": {
            "git_sha": environment.pop("git_sha", None),
            "device": environment.pop("device", None),
            **_hardware_of(environment.pop("hardware", None)),
            "packages": {k: None if v is None else str(v) for k, v in environment.items()},
            "wandb_run": name,
        },
        "dataset_info": {"source": config.get("dataset")},
        "training": {},
        # the summary holds the record's sampler and FID settings; runs logged before it did
        # still name their sampler in the config (eval.sampler)
        "sampler": _mapping(summary.get("sampler")) or ({"name": sampler} if sampler else None),
        "distribution": _mapping(summary.get("distribution")),
        "classifier": _mapping(summary.get("classifier")),
        "created_at": str(summary.get("_timestamp", "")),
    }


def config_from_flat(flat: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The tracker's flat W&B config (`train.epochs`, `betavae.beta`, `env.*`) -> the nested
    config of a local record, and its config hash recomputed the way the runner computes it
    (so `compare` sees one configuration across seeds, as with local records)."""
    model = flat.get("model")
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith(("_", "env.")) or key == "config_hash":
            continue
        section, dot, name = key.partition(".")
        if not dot:
            nested[key] = value
        else:
            nested.setdefault("params" if section == model else section, {})[name] = value
    try:
        return nested, RunConfig.model_validate(nested).config_hash()
    except ValidationError:  # another version's fields: keep what was logged
        return nested, str(flat.get("config_hash", ""))


def history_from_wandb(history: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per-step rows (those with trainer/step) -> the .steps.csv layout: step, train/..."""
    if history is None or len(history) == 0 or "trainer/step" not in history:
        return None
    steps = history[history["trainer/step"].notna()]
    columns = [c for c in steps.columns if c.startswith("train/")]
    frame = steps[["trainer/step", *columns]].rename(columns={"trainer/step": "step"})
    return frame.dropna(how="all", subset=columns).reset_index(drop=True)


def from_wandb_runs(runs: Iterable[Any]) -> ReportInputs:
    """`runs`: objects with .name, .config, .summary, .state and .history() (public API runs)."""
    inputs = ReportInputs(records=[])
    for run in runs:
        config = dict(run.config)
        if not {"model", "dataset"} <= set(config):
            continue  # not a vaebench run
        try:  # the same validation as a local record
            record = Record.parse(
                record_from_wandb(run.name, config, dict(run.summary), run.state),
                f"W&B run {run.name}",
            )
        except RecordError as error:
            warn_on_stderr(f"vaebench: warning: skipped {error}")
            continue
        inputs.records.append(record)
        history = history_from_wandb(run.history(samples=100_000, pandas=True))
        if history is not None:
            inputs.histories[cell_key(record)] = history
    return inputs


def from_wandb(
    path: str, group: str | None = None, tag: str | None = None, api: Any = None
) -> ReportInputs:
    """Runs of ENTITY/PROJECT, optionally one group and/or tag, through the public API."""
    if path.count("/") != 1:
        raise UserInputError(f"--wandb expects ENTITY/PROJECT, got '{path}'")
    if api is None:
        import wandb

        try:
            api = wandb.Api(timeout=30)
        except Exception as error:
            raise UserInputError(f"cannot use the W&B API: {str(error).splitlines()[0]}") from None
    filters: dict[str, Any] = {}
    if group:
        filters["group"] = group
    if tag:
        filters["tags"] = {"$in": [tag]}
    try:
        runs = list(api.runs(path, filters=filters))
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserInputError(f"cannot list W&B runs of {path}: {message}") from None
    inputs = from_wandb_runs(runs)
    if not inputs.records:
        raise UserInputError(
            f"no vaebench runs in {path}"
            + (f" (group {group})" if group else "")
            + (f" (tag {tag})" if tag else "")
        )
    return inputs
