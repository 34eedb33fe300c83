"""docs/metrics.md, the users' copy of the metric contract, says what the code computes."""

from __future__ import annotations

import re
from pathlib import Path

from benchmark.metrics import METRICS
from benchmark.models import FAMILIES

DOC = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
FAMILY_COLUMNS = {"BetaVAE": "betavae", "VQVAE": "vqvae", "VAEGAN": "vaegan"}


def documented_directions() -> dict[str, str]:
    rows = re.findall(r"^\| `([a-z_]+)` \|.*\| (lower|higher) \|$", DOC, flags=re.MULTILINE)
    return dict(rows)


def test_every_metric_is_documented_with_the_registrys_direction():
    directions = documented_directions()
    assert set(directions) == set(METRICS)
    for key, info in METRICS.items():
        assert directions[key] == ("higher" if info.higher_is_better else "lower"), key


def test_the_applicability_table_is_what_each_family_reports():
    section = DOC.split("## Which family reports what", 1)[1].split("##", 1)[0]
    header, *rows = [line for line in section.splitlines() if line.startswith("| ")]
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    reported = {FAMILY_COLUMNS[c]: set() for c in columns}
    for row in rows:  # (the |---| line does not start with "| ")
        cells = [c.strip() for c in row.strip("|").split("|")]
        for column, mark in zip(columns, cells[1:], strict=True):
            if mark == "yes":
                reported[FAMILY_COLUMNS[column]].update(k.strip() for k in cells[0].split(","))
    for name in FAMILIES:
        assert reported[name] == set(FAMILIES.get(name).metric_keys), name
