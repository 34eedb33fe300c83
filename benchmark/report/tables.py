"""Records -> aggregated statistics -> the family-comparison tables (markdown, LaTeX, CSV).

Aggregation over seeds: mean, sample standard deviation (ddof = 1) and n. The best family is
marked only where docs/metrics.md allows ranking, in the direction the metric registry says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from benchmark.metrics import METRICS
from benchmark.models import FAMILIES


# What the report shows of a family comes from the family itself (benchmark/models/*.py). A
# model no family knows (a W&B run of another model, a family added later) still gets a column,
# after the known ones, under its own name.
def family_label(model: str) -> str:
    return FAMILIES.get(model).label if model in FAMILIES else model


def is_gaussian(model: str) -> bool:
    return model in FAMILIES and FAMILIES.get(model).latent == "gaussian"


def family_rank(model: str) -> tuple[int, str]:
    return (FAMILIES.get(model).column if model in FAMILIES else 1000, model)


def ordered_families(models) -> list[str]:
    return sorted(set(models), key=family_rank)


def metrics_in(group: str) -> list[str]:
    """The registry's metrics of one group ("main" or "diagnostic"), in registry order."""
    return [key for key, info in METRICS.items() if info.group == group]


def ranked_metrics(scope: str) -> list[str]:
    """The registry's metrics ranked across all families ("all") or the Gaussian ones."""
    return [key for key, info in METRICS.items() if info.ranked == scope]


# a record written before samplers existed: its gen/ came from the family's fixed prior
UNRECORDED_SAMPLER = "fixed prior"


def samplers_used(records: list[dict], dataset: str) -> dict[str, list[str]]:
    """{family: sampler names} of the ok cells of a dataset, families in column order."""
    used: dict[str, set[str]] = {}
    for r in records:
        if r["dataset"] == dataset and r.get("status") == "ok":
            name = (r.get("sampler") or {}).get("name", UNRECORDED_SAMPLER)
            used.setdefault(r["model"], set()).add(name)
    return {f: sorted(used[f]) for f in ordered_families(used)}


def sampler_phrase(records: list[dict], dataset: str, code: tuple[str, str] = ("`", "`")) -> str:
    """'VAEGAN `normal`, BetaVAE `gmm`, VQVAE `prior`': what every gen/ table says it shows."""
    return ", ".join(
        f"{family_label(f)} " + "/".join(f"{code[0]}{n}{code[1]}" for n in names)
        for f, names in samplers_used(records, dataset).items()
    )


NOT_APPLICABLE = "—"
UNAVAILABLE = "n/a"


@dataclass(frozen=True)
class Cell:
    state: str  # "value" | "not_applicable" | "unavailable"
    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    best: bool = False

    def text(self, bold: tuple[str, str] = ("**", "**"), pm: str = "±") -> str:
        if self.state == "not_applicable":
            return NOT_APPLICABLE
        if self.state == "unavailable":
            return UNAVAILABLE
        spread = "" if self.n < 2 or math.isnan(self.std) else f" {pm} {self.std:.2g}"
        value = f"{self.mean:.4g}{spread}"
        value = f"{bold[0]}{value}{bold[1]}" if self.best else value
        return f"{value} (n={self.n})"


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
    grouped = metric_frame(records).groupby(["dataset", "model", "key"])["value"]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def families_of(records: list[dict]) -> list[str]:
    return ordered_families(r["model"] for r in records if r.get("status") == "ok")


def comparison(
    records: list[dict], dataset: str, prefix: str, metrics: list[str] | None = None
) -> dict[str, dict[str, Cell]]:
    """{metric: {family: Cell}} for one dataset and evaluation set, rows without values left out."""
    ok = [r for r in records if r["dataset"] == dataset and r.get("status") == "ok"]
    stats = aggregate(ok).set_index(["model", "key"]) if ok else None
    families = families_of(ok)
    unavailable = {(r["model"], key) for r in ok for key in r.get("unavailable", {})}
    table: dict[str, dict[str, Cell]] = {}
    for metric in metrics_in("main") if metrics is None else metrics:
        key = prefix + metric
        row = {}
        for family in families:
            if stats is not None and (family, key) in stats.index:
                s = stats.loc[(family, key)]
                row[family] = Cell("value", float(s["mean"]), float(s["std"]), int(s["n"]))
            elif (family, key) in unavailable:
                row[family] = Cell("unavailable")
            else:
                row[family] = Cell("not_applicable")
        if any(cell.state != "not_applicable" for cell in row.values()):
            table[metric] = _mark_best(metric, row)
    return table


def _mark_best(metric: str, row: dict[str, Cell]) -> dict[str, Cell]:
    info = METRICS[metric]
    if info.ranked == "never":
        return row
    eligible = {
        f: c
        for f, c in row.items()
        if c.state == "value" and (info.ranked == "all" or is_gaussian(f))
    }
    if len(eligible) < 2:
        return row
    pick = max if info.higher_is_better else min
    best = pick(c.mean for c in eligible.values())
    return {
        f: Cell(c.state, c.mean, c.std, c.n, best=f in eligible and c.mean == best)
        for f, c in row.items()
    }


def summary_table(
    records: list[dict], dataset: str, prefix: str, metrics: list[str] | None = None
) -> pd.DataFrame:
    """The comparison as text cells (markdown bold for the best): rows metrics, cols families."""
    table = comparison(records, dataset, prefix, metrics)
    families = families_of([r for r in records if r["dataset"] == dataset])
    return pd.DataFrame(
        {family_label(f): [table[m][f].text() for m in table] for f in families},
        index=list(table),
    )


def summary_csv(records: list[dict]) -> pd.DataFrame:
    """Long form of every table: dataset, set, metric, family, mean, std, n, best, status."""
    rows = []
    for dataset in sorted({r["dataset"] for r in records}):
        for prefix in ("recon/", "gen/"):
            table = comparison(
                records, dataset, prefix, metrics_in("main") + metrics_in("diagnostic")
            )
            for metric, row in table.items():
                for family, cell in row.items():
                    rows.append(
                        {
                            "dataset": dataset,
                            "set": prefix.rstrip("/"),
                            "metric": metric,
                            "family": family,
                            "mean": cell.mean,
                            "std": cell.std,
                            "n": cell.n,
                            "best": cell.best,
                            "status": cell.state,
                        }
                    )
    return pd.DataFrame(rows)
