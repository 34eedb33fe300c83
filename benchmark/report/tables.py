"""Records -> tidy pandas frames -> the family-comparison summary table."""

from __future__ import annotations

import math

import pandas as pd

from benchmark.metrics import METRICS

FAMILY_ORDER = ["vaegan", "betavae", "vqvae"]  # the columns of the summary table
NOT_APPLICABLE = "—"
UNAVAILABLE = "n/a"


def metric_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (ok record, metric): dataset, model, seed, key, value."""
    rows = [
        {
            "dataset": r["dataset"],
            "model": r["model"],
            "seed": r["seed"],
            "key": key,
            "value": value,
        }
        for r in records
        if r.get("status") == "ok"
        for key, value in r["metrics"].items()
    ]
    return pd.DataFrame(rows, columns=["dataset", "model", "seed", "key", "value"])


def aggregate(records: list[dict]) -> pd.DataFrame:
    """mean, sample std (ddof=1) and n over seeds, per dataset x model x metric key."""
    frame = metric_frame(records)
    grouped = frame.groupby(["dataset", "model", "key"])["value"]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def format_cell(mean: float, std: float, n: int) -> str:
    if n <= 1 or math.isnan(std):
        return f"{mean:.4g} (n=1)" if n == 1 else f"{mean:.4g}"
    return f"{mean:.4g} ± {std:.2g} (n={n})"


def summary_table(records: list[dict], dataset: str, prefix: str) -> pd.DataFrame:
    """Rows: the metrics under `prefix` (`recon/` or `gen/`) in METRICS order; columns: families.

    "—" where a metric does not apply to a family, "n/a" where a record says it was unavailable.
    """
    stats = aggregate([r for r in records if r["dataset"] == dataset])
    ok = [r for r in records if r["dataset"] == dataset and r.get("status") == "ok"]
    families = [f for f in FAMILY_ORDER if any(r["model"] == f for r in ok)]
    families += sorted({r["model"] for r in ok} - set(families))
    unavailable = {(r["model"], key) for r in ok for key in r.get("unavailable", {})}
    table = {}
    for metric in METRICS:
        key = prefix + metric
        row = {}
        for family in families:
            match = stats[(stats.model == family) & (stats.key == key)]
            if len(match):
                m = match.iloc[0]
                row[family] = format_cell(m["mean"], m["std"], int(m["n"]))
            elif (family, key) in unavailable:
                row[family] = UNAVAILABLE
            else:
                row[family] = NOT_APPLICABLE
        if any(v != NOT_APPLICABLE for v in row.values()):
            table[metric] = row
    return pd.DataFrame.from_dict(table, orient="index", columns=families)
