"""The summary across datasets: per dataset and headline metric, each family's rank, and each
family's mean rank over them (the report's first table).

A family's rank on a row is 1 + the number of families whose seeds put them significantly
ahead of it (two-sided Welch t-test, p < SIGNIFICANCE, as the per-dataset tables use): families
the seeds cannot separate share a rank. Only families that have learned are ranked (`health.py`);
with fewer than two seeds, or fewer than two rankable families, a row ranks no one.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.metrics.registry import METRICS
from benchmark.records.results import Record
from benchmark.report.tables import (
    NOT_APPLICABLE,
    SIGNIFICANCE,
    UNAVAILABLE,
    Cell,
    is_gaussian,
    is_ranked,
    networks_behind,
    spec_table,
    table_specs,
    welch_p,
)

NOT_LEARNED = "not learned"
NO_VERDICT = "·"  # a row that ranks no one (one seed, or one rankable family)


@dataclass(frozen=True)
class RankedRow:
    dataset: str
    prefix: str
    metric: str
    ranks: dict[str, int]  # the ranked families only
    cells: dict[str, Cell]

    def text(self, family: str, health_marks=("<sup>", "</sup>")) -> str:
        cell = self.cells.get(family)
        if cell is None or cell.state == "not_applicable":
            return NOT_APPLICABLE
        if cell.state == "unavailable":
            return UNAVAILABLE
        if cell.flags:
            return f"{NOT_LEARNED}{health_marks[0]}{','.join(cell.flags)}{health_marks[1]}"
        if family not in self.ranks:
            return NO_VERDICT
        rank = self.ranks[family]
        shared = sum(r == rank for r in self.ranks.values()) > 1
        return f"{rank}{'=' if shared else ''}"


def row_ranks(metric: str, row: dict[str, Cell]) -> dict[str, int]:
    info = METRICS[metric]
    rankable = {
        f: c
        for f, c in row.items()
        if c.state == "value" and not c.flags and (info.ranked == "all" or is_gaussian(f))
    }
    if len(rankable) < 2 or any(c.n < 2 for c in rankable.values()):
        return {}

    def ahead(a: Cell, b: Cell) -> bool:
        better = a.mean > b.mean if info.higher_is_better else a.mean < b.mean
        return better and welch_p(a, b) < SIGNIFICANCE

    return {
        f: 1 + sum(ahead(other, c) for g, other in rankable.items() if g != f)
        for f, c in rankable.items()
    }


def ranked_rows(records: list[Record]) -> list[RankedRow]:
    """Every ranked headline row of every dataset, datasets in name order."""
    headline = table_specs()[0]
    rows = []
    for dataset in sorted({r.dataset for r in records}):
        ok = [r for r in records if r.dataset == dataset and r.status == "ok"]
        for group in spec_table(records, dataset, headline):
            for prefix, metric, row in group:
                if is_ranked(prefix, metric) and any(c.state == "value" for c in row.values()):
                    # numbers of two feature networks do not compare: no ranks on that row
                    comparable = len(networks_behind(ok, prefix + metric)) < 2
                    ranks = row_ranks(metric, row) if comparable else {}
                    rows.append(RankedRow(dataset, prefix, metric, ranks, row))
    return rows


def seeds_can_rank(rows: list[RankedRow]) -> bool:
    """Whether a summary has anything to say: some value from two or more seeds, or a family
    that has not learned (a one-seed report ranks no one, and says so in one line)."""
    cells = [c for row in rows for c in row.cells.values() if c.state == "value"]
    return any(c.n >= 2 or c.flags for c in cells)


def mean_ranks(rows: list[RankedRow], families: list[str]) -> dict[str, tuple[float, int]]:
    """{family: (mean rank, rows it was ranked on)} over the rows that rank it."""
    means = {}
    for family in families:
        ranks = [row.ranks[family] for row in rows if family in row.ranks]
        if ranks:
            means[family] = (sum(ranks) / len(ranks), len(ranks))
    return means
