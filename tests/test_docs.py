"""docs/metrics.md, the users' copy of the metric contract, says what the code computes."""

from __future__ import annotations

import re
from pathlib import Path

from benchmark.metrics.registry import METRICS, metrics_of
from benchmark.models import FAMILIES
from conftest import write_record

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
        assert reported[name] == set(metrics_of(FAMILIES.get(name))), name


def test_a_new_metric_is_one_registry_entry(tmp_path, monkeypatch):
    """Adding a metric (FID, say) touches its registry entry only: the report tables and plots,
    compare and W&B's summary directions all read the entry."""
    from benchmark.metrics.registry import MetricInfo
    from benchmark.report import from_directory, write_report
    from benchmark.report.compare import compare, summarise
    from benchmark.report.plots import metric_figure
    from benchmark.running.suites import expand_cells, resolve_suite
    from benchmark.tracking import wandb_tracker

    entry = MetricInfo("sharpness", True, "all", "a stand-in new metric", plotted=True)
    monkeypatch.setitem(METRICS, "sharpness", entry)

    def write(folder, shift):
        suite = resolve_suite("quick", models=["betavae", "vqvae"], seeds=[0, 1])
        for cell in expand_cells(suite):
            value = (0.9 if cell.model == "vqvae" else 0.5) + 0.01 * cell.seed + shift
            metrics = {"recon/sharpness": value, "recon/ssim": 0.5}
            write_record(folder, cell, metrics=metrics)
        return from_directory(folder)

    base = write(tmp_path / "base", 0.0)
    report = write_report(base, tmp_path / "report").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| recon/sharpness ↑"))
    assert "**0.9050 ± 0.0071**" in row and "0.5050" in row  # a row, ranked: higher is better
    assert metric_figure(base.records, "mnist-5k", "reconstruction", tmp_path / "bars.png")
    worse = write(tmp_path / "worse", -0.2)
    deltas = compare(summarise(base.records), summarise(worse.records))
    assert {d.verdict for d in deltas if d.metric == "recon/sharpness"} == {"regression"}
    assert wandb_tracker.summary_directions()["recon/sharpness"] == "max"


def test_each_metrics_sets_and_switch_are_what_the_docs_and_the_config_say():
    """`gen/` only in the docs exactly where the registry's `sets` is gen alone; every switch a
    metric names is a provider, whose switch is a boolean of EvalConfig and whose row in the
    docs' provider table gives its keys and needs."""
    from benchmark.config import EvalConfig
    from benchmark.metrics.providers import PROVIDERS

    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.*) \| (?:lower|higher) \|$", DOC, re.MULTILINE))
    for key, info in METRICS.items():
        assert ("`gen/` only" in rows[key]) == (info.sets == ("gen",)), key
        assert info.switch is None or info.switch in PROVIDERS, key
    providers = re.findall(r"^\| `([a-z_]+)` \| `eval\.([a-z_]+)` \| (.*) \| (.*) \|$", DOC, re.M)
    assert [name for name, *_ in providers] == PROVIDERS.names()
    for name, switch, keys, needs in providers:
        provider = PROVIDERS.get(name)
        assert switch == name and EvalConfig.model_fields[switch].annotation is bool, name
        assert keys == ", ".join(f"`{key}`" for key in provider.record_keys()), name
        assert needs == provider.needs and provider.record_keys(), name
