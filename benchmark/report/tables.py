"""Records -> aggregated statistics -> the family-comparison tables (markdown, LaTeX, CSV).

Aggregation over seeds: mean, sample standard deviation (ddof = 1) and n. The best family is
marked only where docs/metrics.md allows ranking, in the direction the metric registry says,
and only where the seeds carry it: with at least two seeds per family, the best mean is marked
where a two-sided Welch t-test against the runner-up gives p < 0.05; otherwise the best and
every family the test cannot tell from it are marked tied. With one seed nothing is marked, and
nothing is marked on a row where a leader has not learned (`health.py`). In gen/, only the
realism metrics are ranked: the others measure self-consistency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd

from benchmark.metrics.registry import METRICS
from benchmark.models import FAMILIES
from benchmark.records.results import Record
from benchmark.report.health import health, ordered_marks


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


def samplers_used(records: list[Record], dataset: str) -> dict[str, list[str]]:
    """{family: sampler names} of the ok cells of a dataset, families in column order."""
    used: dict[str, set[str]] = {}
    for r in records:
        if r.dataset == dataset and r.status == "ok":
            name = (r.sampler or {}).get("name", UNRECORDED_SAMPLER)
            used.setdefault(r.model, set()).add(name)
    return {f: sorted(used[f]) for f in ordered_families(used)}


def sampler_phrase(records: list[Record], dataset: str, code: tuple[str, str] = ("`", "`")) -> str:
    """'VAEGAN `normal`, BetaVAE `gmm`, VQVAE `prior`': what every gen/ table says it shows."""
    return ", ".join(
        f"{family_label(f)} " + "/".join(f"{code[0]}{n}{code[1]}" for n in names)
        for f, names in samplers_used(records, dataset).items()
    )


NOT_APPLICABLE = "—"
UNAVAILABLE = "n/a"
SIGNIFICANCE = 0.05  # a best family is marked where Welch's test against the runner-up is below
TIE_MARK = "†"  # beside each of the leaders the test cannot separate


@dataclass(frozen=True)
class Marks:
    """How a table writes a cell: bold, tie mark, ±, health marks (markdown's; LaTeX has its
    own)."""

    bold: tuple[str, str] = ("**", "**")
    tie: str = f" {TIE_MARK}"
    pm: str = "±"
    health: tuple[str, str] = ("<sup>", "</sup>")


def significant(value: float, digits: int = 4) -> str:
    """A number alone (no spread to set its precision): `digits` significant digits, never in
    exponent notation for the magnitudes metrics take (1e-4 .. 1e5)."""
    if not math.isfinite(value):  # a diverged cell's NaN or inf, shown as it is
        return f"{value:g}"
    if value == round(value) and abs(value) < 1e5:  # a count: 16, not 16.00
        return f"{value:.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def mean_and_spread(mean: float, std: float, pm: str = "±") -> str:
    """`813 ± 180`, `0.750 ± 0.012`: the std to two significant digits, the mean to the same
    decimal place (never beyond the units: a std of 178 is 180 and its mean 813)."""
    if std == 0 or not (math.isfinite(std) and math.isfinite(mean)):
        return f"{significant(mean)} {pm} {std:g}"
    decimals = 1 - math.floor(math.log10(std))
    if round(std, decimals) >= 10 ** (2 - decimals):  # 0.0996 rounds to 0.10, not 0.100
        decimals -= 1
    shown = max(0, decimals)
    return f"{mean:.{shown}f} {pm} {round(std, decimals):.{shown}f}"


@dataclass(frozen=True)
class Cell:
    state: str  # "value" | "not_applicable" | "unavailable"
    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    best: bool = False
    tied: bool = False  # one of the leaders, not separable by the seeds
    # health marks of the family's cells behind it (`health.REASONS`): it has not learned
    flags: tuple[str, ...] = ()

    def text(
        self, marks: Marks = Marks(), show_n: bool = True, scale: int = 0, flags: bool = True
    ) -> str:
        """The cell as a table writes it; `scale`: shown times 10**scale (`row_scale`);
        `flags=False` leaves the health marks to the column header (LaTeX's narrow columns)."""
        if self.state == "not_applicable":
            return NOT_APPLICABLE
        if self.state == "unavailable":
            return UNAVAILABLE
        mean, std = self.mean * 10**scale, self.std * 10**scale
        if self.n < 2 or math.isnan(std):
            value = significant(mean)
        else:
            value = mean_and_spread(mean, std, marks.pm)
        value = f"{marks.bold[0]}{value}{marks.bold[1]}" if self.best else value
        value += marks.tie if self.tied else ""
        if self.flags and flags:
            value += f"{marks.health[0]}{','.join(self.flags)}{marks.health[1]}"
        return f"{value} (n={self.n})" if show_n else value


def welch_p(a: Cell, b: Cell) -> float:
    """Two-sided Welch t-test between two families' seeds, from their means, sample stds and
    counts (n >= 2 each). Two sets without spread differ certainly or not at all."""
    from scipy.stats import ttest_ind_from_stats

    if a.std == 0 and b.std == 0:
        return 0.0 if a.mean != b.mean else 1.0
    result = ttest_ind_from_stats(a.mean, a.std, a.n, b.mean, b.std, b.n, equal_var=False)
    return float(result.pvalue)


def table_n(table: dict[str, dict[str, Cell]], records: list[Record], dataset: str) -> int | None:
    """The number of seeds behind every value of a table, when it is one number (then a table
    says it once instead of in every cell); for a table without values (all n/a), the number
    of ok seeds of every family, when it is one."""
    counts = {cell.n for row in table.values() for cell in row.values() if cell.state == "value"}
    if not counts:
        ok = [r for r in records if r.dataset == dataset and r.status == "ok"]
        counts = {sum(r.model == f for r in ok) for f in families_of(ok)}
    return counts.pop() if len(counts) == 1 else None


def metric_frame(records: list[Record]) -> pd.DataFrame:
    """One row per (ok record, metric): dataset, model, seed, key, value."""
    rows = [
        {
            "dataset": r.dataset,
            "model": r.model,
            "seed": r.seed,
            "key": key,
            "value": value,
        }
        for r in records
        if r.status == "ok"
        for key, value in r.metrics.items()
    ]
    return pd.DataFrame(rows, columns=["dataset", "model", "seed", "key", "value"])


def aggregate(records: list[Record]) -> pd.DataFrame:
    """mean, sample std (ddof=1) and n over seeds, per dataset x model x metric key."""
    grouped = metric_frame(records).groupby(["dataset", "model", "key"])["value"]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def families_of(records: list[Record]) -> list[str]:
    return ordered_families(r.model for r in records if r.status == "ok")


def family_flags(records: list[Record], dataset: str) -> dict[str, tuple[str, ...]]:
    """{family: the health marks of its ok cells on `dataset`} for the families that have a
    cell that has not learned (`health.py`)."""
    marks: dict[str, set[str]] = {}
    for r in records:
        if r.dataset == dataset and r.status == "ok" and not (verdict := health(r)).learned:
            marks.setdefault(r.model, set()).update(verdict.marks)
    return {family: ordered_marks(marks[family]) for family in ordered_families(marks)}


def comparison(
    records: list[Record], dataset: str, prefix: str, metrics: list[str] | None = None
) -> dict[str, dict[str, Cell]]:
    """{metric: {family: Cell}} for one dataset and evaluation set, rows without values left
    out; the cells of a family that has not learned carry its health marks. A row whose
    numbers come from different feature networks (LPIPS, Inception or classifier weights)
    ranks no one."""
    ok = [r for r in records if r.dataset == dataset and r.status == "ok"]
    stats = aggregate(ok).set_index(["model", "key"]) if ok else None
    families = families_of(ok)
    flags = family_flags(ok, dataset)
    unavailable = {(r.model, key) for r in ok for key in r.unavailable}
    table: dict[str, dict[str, Cell]] = {}
    for metric in metrics_in("main") if metrics is None else metrics:
        key = prefix + metric
        row = {}
        for family in families:
            if stats is not None and (family, key) in stats.index:
                s = stats.loc[(family, key)]
                row[family] = Cell(
                    "value",
                    float(s["mean"]),
                    float(s["std"]),
                    int(s["n"]),
                    flags=flags.get(family, ()),
                )
            elif (family, key) in unavailable:
                row[family] = Cell("unavailable")
            else:
                row[family] = Cell("not_applicable")
        if any(cell.state != "not_applicable" for cell in row.values()):
            ranked = is_ranked(prefix, metric) and len(networks_behind(ok, key)) < 2
            table[metric] = _mark_best(metric, row) if ranked else row
    return table


def networks_behind(records: list[Record], key: str) -> set[str]:
    """The pretrained or trained networks (weights) behind a metric's numbers in `records`:
    numbers from two of them do not compare, so such a row ranks no one."""
    switch = METRICS[key.split("/", 1)[1]].switch
    if switch is None:
        return set()
    return {r.feature_networks().get(switch, "unnamed") for r in records if key in r.metrics}


def is_ranked(prefix: str, metric: str) -> bool:
    """Whether a best family is ever marked on this row (docs/metrics.md, "Ranking"); the
    rows that are carry ↑/↓ in every table and figure."""
    info = METRICS[metric]
    return info.ranked != "never" and (prefix != "gen/" or info.realism)


def direction_arrow(prefix: str, metric: str) -> str:
    """↑ / ↓ for a ranked row, nothing for one that is only shown."""
    if not is_ranked(prefix, metric):
        return ""
    return "↑" if METRICS[metric].higher_is_better else "↓"


def leaders(metric: str, row: dict[str, Cell]) -> tuple[set[str], bool]:
    """(the families the seeds put first, whether one alone): the best mean when a two-sided
    Welch t-test against the runner-up gives p < SIGNIFICANCE, else it and every family the
    test cannot tell from it. Empty where no verdict is possible (one seed, one family)."""
    info = METRICS[metric]
    eligible = {
        f: c
        for f, c in row.items()
        if c.state == "value" and (info.ranked == "all" or is_gaussian(f))
    }
    if len(eligible) < 2 or any(c.n < 2 for c in eligible.values()):
        return set(), False
    ordered = sorted(eligible.items(), key=lambda fc: fc[1].mean, reverse=info.higher_is_better)
    (leader, top), (_, runner_up) = ordered[0], ordered[1]
    if welch_p(top, runner_up) < SIGNIFICANCE:
        return {leader}, True
    return {f for f, c in ordered if f == leader or welch_p(top, c) >= SIGNIFICANCE}, False


def _mark_best(metric: str, row: dict[str, Cell]) -> dict[str, Cell]:
    first, alone = leaders(metric, row)
    if not first or any(row[f].flags for f in first):
        return row  # no verdict, or a leader that has not learned: nothing is marked
    return {
        f: replace(c, best=alone and f in first, tied=not alone and f in first)
        for f, c in row.items()
    }


@dataclass(frozen=True)
class TableSpec:
    """One comparison table of a dataset: its title, and its rows as groups of one evaluation
    set's metrics (a rule between groups)."""

    name: str  # the table's id: its LaTeX label, its figure's file name
    title: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]  # (prefix, metrics)

    @property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(prefix for prefix, _ in self.groups)


def table_specs() -> list[TableSpec]:
    """The two comparison tables every report (markdown, LaTeX, the terminal summary) shows per
    dataset: the headline (generation's realism rows, which carry its verdict, and the core
    reconstruction rows), sized for one column of a paper; and the rest: reconstruction's other
    rows, generation's self-consistency rows (never ranked), the losses and the diagnostics."""
    main, diagnostic = metrics_in("main"), metrics_in("diagnostic")
    realism = tuple(m for m in main if METRICS[m].realism and "gen" in METRICS[m].sets)
    core = tuple(m for m in main if METRICS[m].headline)
    return [
        TableSpec(
            "headline",
            "Headline: realism of generated samples and reconstruction of held-out test images",
            (("gen/", realism), ("recon/", core)),
        ),
        TableSpec(
            "further",
            "Further rows, losses and diagnostics (generation's pixel rows compare each sample "
            "with its own reconstruction: self-consistency, never ranked)",
            (
                ("recon/", tuple(m for m in main + diagnostic if m not in core)),
                ("gen/", tuple(m for m in main + diagnostic if m not in realism)),
            ),
        ),
    ]


def spec_table(
    records: list[Record], dataset: str, spec: TableSpec
) -> list[list[tuple[str, str, dict[str, Cell]]]]:
    """The rows of one table, per group: (prefix, metric, {family: Cell}); empty groups left
    out."""
    groups = []
    for prefix, metrics in spec.groups:
        table = comparison(records, dataset, prefix, list(metrics))
        if table:
            groups.append([(prefix, metric, row) for metric, row in table.items()])
    return groups


def row_scale(row: dict[str, Cell]) -> int:
    """A row of small numbers is shown times 10^3 (or 10^6): where a std needs more than four
    decimals (KID's `0.04420 ± 0.00085` is `44.20 ± 0.85` ×10³), or every |mean| is below
    0.01; otherwise as they are (`0.058 ± 0.038`)."""
    values = [c for c in row.values() if c.state == "value"]
    largest = max((abs(c.mean) for c in values), default=0.0)
    smallest_std = min((c.std for c in values if c.n > 1 and c.std > 0), default=math.inf)
    scale = 0
    while scale < 9 and (smallest_std * 10**scale < 1e-3 or 0 < largest * 10**scale < 0.01):
        scale += 3
    return scale


SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def row_label(prefix: str, metric: str, scale: int = 0) -> str:
    """`gen/kid ×10³ ↓`: the row's key, its scale and, where it is ranked, its direction."""
    arrow = direction_arrow(prefix, metric)
    times = f" ×10{str(scale).translate(SUPERSCRIPT)}" if scale else ""
    return f"{prefix}{metric}{times}" + (f" {arrow}" if arrow else "")


def summary_table(
    records: list[Record], dataset: str, spec: TableSpec, marks: Marks = Marks()
) -> tuple[pd.DataFrame, int | None]:
    """One table as text cells (markdown bold for the best, † for tied leaders, health marks):
    rows `prefix/metric ↑`, columns families; and the number of seeds when every cell has the
    same (the cells then leave it out: the table says it once)."""
    groups = spec_table(records, dataset, spec)
    families = families_of([r for r in records if r.dataset == dataset])
    rows = [row for group in groups for row in group]
    n = table_n({f"{p}{m}": row for p, m, row in rows}, records, dataset)
    scales = [row_scale(row) for _, _, row in rows]
    frame = pd.DataFrame(
        {
            family_label(f): [
                row[f].text(marks, show_n=n is None, scale=scale)
                for (_, _, row), scale in zip(rows, scales, strict=True)
            ]
            for f in families
        },
        index=[row_label(p, m, scale) for (p, m, _), scale in zip(rows, scales, strict=True)],
    )
    return frame, n


def seeds_phrase(n: int | None) -> str:
    """What a table says once about its seeds."""
    if n is None:
        return "n seeds per cell as shown"
    if n == 1:
        return "n = 1 seed per family: no best family is marked"
    return f"n = {n} seeds per family"


@dataclass(frozen=True, order=True)
class ClassifierUsed:
    """A dataset classifier behind some cells' cfd, precision and recall (record.classifier)."""

    recipe: str
    accuracy: float
    floor: float
    sha256: str
    # "shipped" (the same tensors on every machine) or "trained on this machine"
    source: str = "trained on this machine"


def classifiers_used(records: list[Record], dataset: str, prefix: str) -> list[ClassifierUsed]:
    """Each distinct classifier whose cfd a table of `prefix` on `dataset` shows."""
    used = {
        ClassifierUsed(
            c["recipe"]["name"],
            c["test_accuracy"],
            c["accuracy_floor"],
            c["sha256"],
            c.get("source", "trained on this machine"),
        )
        for r in records
        if r.dataset == dataset and (c := r.classifier) and f"{prefix}cfd" in r.metrics
    }
    return sorted(used)


# a spreadsheet runs a cell that begins with one of these as a formula (=HYPERLINK(...))
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """A record's string for summary.csv: one a spreadsheet would read as a formula gets a
    leading apostrophe (OWASP's CSV-injection advice), so it opens as text."""
    return f"'{text}" if str(text).startswith(FORMULA_PREFIXES) else text


def summary_csv(records: list[Record]) -> pd.DataFrame:
    """Long form of every table: dataset, set, metric, family, mean, std, n, best, tied,
    status, flags."""
    rows = []
    for dataset in sorted({r.dataset for r in records}):
        for prefix in ("recon/", "gen/"):
            table = comparison(
                records, dataset, prefix, metrics_in("main") + metrics_in("diagnostic")
            )
            for metric, row in table.items():
                for family, cell in row.items():
                    rows.append(
                        {
                            "dataset": csv_text(dataset),
                            "set": prefix.rstrip("/"),
                            "metric": metric,
                            "family": csv_text(family),
                            "mean": cell.mean,
                            "std": cell.std,
                            "n": cell.n,
                            "best": cell.best,
                            "tied": cell.tied,
                            "status": cell.state,
                            # health marks (i, c, f) of a family that has not learned
                            "flags": ",".join(cell.flags),
                        }
                    )
    return pd.DataFrame(rows)
