"""Regression detection between two sets of records (or a stored baseline summary).

A regression is a change in a metric's bad direction larger than
max(k x pooled seed std, relative tolerance x |baseline mean|), per dataset x family x metric.
Both sides must have run the same configuration (seeds and suite name aside).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.config import identity
from benchmark.errors import UserInputError
from benchmark.metrics.registry import METRICS
from benchmark.records.cellfiles import is_in_history
from benchmark.records.results import Record, iter_records, warn_on_stderr

BASELINE_SCHEMA = "vaebench-baseline/1"


def config_identity(record: Record) -> str:
    """The cell's configuration across seeds (`config.SAMENESS["seeds"]`)."""
    return identity(record.config, "seeds")


def summarise(records: list[Record]) -> dict[str, Any]:
    """Baseline summary: per dataset|model, the config identity and mean/std/n of each metric."""
    cells: dict[str, Any] = {}
    for record in records:
        key = f"{record.dataset}|{record.model}"
        cell = cells.setdefault(
            key, {"config": config_identity(record), "values": {}, "failed_seeds": []}
        )
        if cell["config"] != config_identity(record):
            raise UserInputError(f"records of {key} mix different configurations")
        if record.status != "ok":
            cell["failed_seeds"].append(record.seed)
            continue
        for provider, network in record.feature_networks().items():
            cell.setdefault("networks", {}).setdefault(provider, [])
            if network not in cell["networks"][provider]:
                cell["networks"][provider].append(network)
        for metric, value in record.metrics.items():
            cell["values"].setdefault(metric, []).append(value)
    for cell in cells.values():
        values = cell.pop("values")
        cell["metrics"] = {
            metric: {
                "mean": sum(v) / len(v),
                "n": len(v),
                "std": pd.Series(v).std() if len(v) > 1 else 0.0,
            }
            for metric, v in sorted(values.items())
        }
    hardware = {r.environment.hardware_id for r in records}
    # the dataset classifiers behind cfd/precision/recall (their weights' SHA-256, short)
    classifiers = {(r.classifier or {}).get("sha256", "")[:16] for r in records}
    return {
        "schema": BASELINE_SCHEMA,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": sorted(h for h in hardware if h),
        "classifiers": sorted(c for c in classifiers if c),
        "cells": cells,
    }


def _differing(baseline: dict[str, Any], current: dict[str, Any], key: str):
    """(baseline's, current's) list under `key` where both sides say and they differ; else
    None (a baseline written before the key existed does not say)."""

    def listed(side: dict[str, Any]) -> list[str]:
        values = side.get(key)
        return [str(value) for value in values] if isinstance(values, list) else []

    before, now = listed(baseline), listed(current)
    return (before, now) if before and now and before != now else None


def hardware_difference(baseline: dict[str, Any], current: dict[str, Any]) -> str | None:
    """One line when the two sides ran on different hardware (float results differ between
    CPU types and GPUs, so a delta may be the machine's); None when they match or a side (a
    baseline written before hardware was recorded) does not say."""
    if (differing := _differing(baseline, current, "hardware")) is None:
        return None
    before, now = differing
    return (
        f"vaebench: note: baseline and run come from different hardware (baseline: "
        f"{'; '.join(before)}; run: {'; '.join(now)}): float results differ between them"
    )


def classifier_difference(baseline: dict[str, Any], current: dict[str, Any]) -> str | None:
    """One line when the two sides measured cfd/precision/recall with different dataset
    classifiers (docs/metrics.md: a cfd compares only with cfds of the same classifier)."""
    if (differing := _differing(baseline, current, "classifiers")) is None:
        return None
    before, now = differing
    return (
        f"vaebench: note: baseline and run measured cfd, precision and recall with different "
        f"dataset classifiers (weights SHA-256 baseline: {', '.join(before)}; run: "
        f"{', '.join(now)}): their deltas are partly the classifiers'"
    )


def _is_baseline_cell(cell: Any) -> bool:
    return (
        isinstance(cell, dict)
        and isinstance(cell.get("config"), str)
        and isinstance(cell.get("metrics"), dict)
        and all(
            isinstance(m, dict) and {"mean", "n", "std"} <= set(m) for m in cell["metrics"].values()
        )
    )


def load_side(path: str | Path, match: dict[str, Any] | None = None) -> dict[str, Any]:
    """A baseline JSON, or the summary of a records folder. For a folder, each cell's current
    records (outside `history/`); with `match` (the other side's summary), the configuration of
    each cell that matches the other side's, when the folder kept one (current or history)."""
    path = Path(path)
    if path.is_file():
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, OSError):
            raise UserInputError(f"{path} is not a baseline JSON") from None
        if not (
            isinstance(data, dict)
            and data.get("schema") == BASELINE_SCHEMA
            and isinstance(data.get("cells"), dict)
            and all(_is_baseline_cell(cell) for cell in data["cells"].values())
        ):
            raise UserInputError(f"{path} is not a vaebench baseline ({BASELINE_SCHEMA})")
        return data
    if path.is_dir():
        records = _records_matching(path, match)
        if not records:
            raise UserInputError(f"no result records under {path}")
        return summarise(records)
    raise UserInputError(f"no such baseline or results folder: {path}")


def _records_matching(folder: Path, match: dict[str, Any] | None) -> list[Record]:
    groups: dict[str, dict[str, list[Record]]] = {}  # cell -> config identity -> records
    current: dict[str, set[str]] = {}  # cell -> configs outside history/
    for path, record in iter_records(
        folder, warn=warn_on_stderr, include_history=match is not None
    ):
        key = f"{record.dataset}|{record.model}"
        identity = config_identity(record)
        groups.setdefault(key, {}).setdefault(identity, []).append(record)
        if not is_in_history(path, folder):
            current.setdefault(key, set()).add(identity)
    chosen = []
    for key, configs in groups.items():
        wanted = ((match or {}).get("cells", {}).get(key) or {}).get("config")
        picks = [wanted] if wanted in configs else sorted(current.get(key, configs))
        for identity in picks:
            chosen += configs[identity]
    return chosen


@dataclass(frozen=True)
class Delta:
    dataset: str
    model: str
    metric: str
    baseline: float
    current: float | None
    threshold: float
    verdict: str  # regression | improved | ok | missing | not judged | other network


def pooled_std(a: dict, b: dict) -> float:
    dof = a["n"] + b["n"] - 2
    if dof <= 0:
        return 0.0
    return math.sqrt(((a["n"] - 1) * a["std"] ** 2 + (b["n"] - 1) * b["std"] ** 2) / dof)


# The gate's flags have ranges, so that no accepted value switches it off: a NaN, an infinite
# or a huge k or tolerance would call every regression "ok".
K_RANGE = (0.0, 10.0)  # exclusive, inclusive: seed-noise multiples
REL_TOL_RANGE = (0.0, 0.5)  # inclusive: a fraction of the baseline mean


def check_thresholds(k: float, rel_tol: float) -> None:
    """One line (exit 2) for a `--k` or `--rel-tol` outside its range."""
    low, high = K_RANGE
    if not (math.isfinite(k) and low < k <= high):
        raise UserInputError(f"--k must be a number above {low:g} and at most {high:g}, got {k}")
    low, high = REL_TOL_RANGE
    if not (math.isfinite(rel_tol) and low <= rel_tol <= high):
        raise UserInputError(
            f"--rel-tol must be a number from {low:g} to {high:g} (a fraction of the baseline "
            f"mean), got {rel_tol}"
        )


def compare(baseline: dict, current: dict, k: float = 3.0, rel_tol: float = 0.05) -> list[Delta]:
    check_thresholds(k, rel_tol)
    mismatched = [
        key
        for key in baseline["cells"].keys() & current["cells"].keys()
        if baseline["cells"][key]["config"] != current["cells"][key]["config"]
    ]
    if mismatched:
        raise UserInputError(
            f"the two sides ran different configurations for {', '.join(sorted(mismatched))}; "
            "compare runs of the same suite settings (or write a new baseline)"
        )
    deltas = []
    for key, base_cell in sorted(baseline["cells"].items()):
        dataset, model = key.split("|", 1)
        current_cell = current["cells"].get(key, {"metrics": {}})
        for metric, base in base_cell["metrics"].items():
            name = metric.split("/", 1)[-1]
            info = METRICS.get(name)
            now = current_cell["metrics"].get(metric)
            if now is None:
                deltas.append(Delta(dataset, model, metric, base["mean"], None, 0.0, "missing"))
                continue
            if not same_network(name, base_cell, current_cell):
                deltas.append(
                    Delta(dataset, model, metric, base["mean"], now["mean"], 0.0, "other network")
                )
                continue
            threshold = max(k * pooled_std(base, now), rel_tol * abs(base["mean"]))
            change = now["mean"] - base["mean"]
            worse = -change if (info and info.higher_is_better) else change
            if info is None or not info.judged:
                verdict = "not judged"
            elif worse > threshold:
                verdict = "regression"
            elif -worse > threshold:
                verdict = "improved"
            else:
                verdict = "ok"
            deltas.append(
                Delta(dataset, model, metric, base["mean"], now["mean"], threshold, verdict)
            )
    return deltas


def same_network(metric: str, baseline_cell: dict, current_cell: dict) -> bool:
    """Whether both sides measured `metric` with the same feature network (LPIPS backbone,
    Inception, dataset classifier), where both say which; a metric of no network, or a side
    written before networks were recorded, counts as the same."""
    info = METRICS.get(metric)
    provider = info.switch if info is not None else None
    if provider is None:
        return True
    before = (baseline_cell.get("networks") or {}).get(provider)
    now = (current_cell.get("networks") or {}).get(provider)
    return not before or not now or sorted(before) == sorted(now)


def delta_table(deltas: list[Delta]) -> str:
    rows = [
        {
            "dataset": d.dataset,
            "family": d.model,
            "metric": d.metric,
            "baseline": f"{d.baseline:.4g}",
            "current": "—" if d.current is None else f"{d.current:.4g}",
            "change": "—" if d.current is None else f"{d.current - d.baseline:+.3g}",
            "threshold": f"{d.threshold:.3g}",
            "verdict": d.verdict,
        }
        for d in deltas
    ]
    return pd.DataFrame(rows).to_markdown(index=False) if rows else "(nothing to compare)"
