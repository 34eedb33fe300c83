"""What it costs to extend vaebench, proved end to end: a fourth family is one file
(`tests/families/rae.py`, nowhere in the package), a per-image metric one registry entry, a
dataset one catalogue entry."""

from __future__ import annotations

import json

import pytest

from benchmark.catalogue import DATASETS, DatasetSpec
from benchmark.cli import main
from benchmark.metrics import METRICS, MetricInfo
from benchmark.models import FAMILIES
from benchmark.results import load_records
from conftest import TINY_SETTINGS
from families import rae

SETTINGS = [arg for setting in TINY_SETTINGS for arg in ("--set", setting)]


@pytest.fixture
def rae_registered():
    """The family registered the way a plugin would, and taken out again afterwards."""
    FAMILIES.add("rae", rae.FAMILY)
    yield rae.FAMILY
    FAMILIES.remove("rae")


def test_a_fourth_family_in_one_file_runs_reports_and_compares(
    rae_registered, parquet_repo, tmp_path, capsys
):
    def run(out, *more):
        return main(
            ["run", "--datasets", str(parquet_repo), "--models", "rae,betavae"]
            + ["--out", str(out), "--wandb", "off", *SETTINGS, *more]
        )

    assert run(tmp_path / "a") == 0
    assert "2 ok, 0 failed" in capsys.readouterr().out
    (record,) = [r for r in load_records(tmp_path / "a") if r.model == "rae"]
    assert record.status == "ok" and not record.incomplete
    # every metric the registry says the family reports, in both sets, computed or n/a
    expected = {
        f"{prefix}/{key}" for key in rae_registered.metric_keys for prefix in METRICS[key].sets
    }
    assert set(record.metrics) | set(record.unavailable) == expected
    assert not {"recon/kl", "recon/elbo", "recon/active_units"} & set(record.metrics)
    assert record.sampler["name"] == "gmm"  # the family's first sampler is its default

    report = (tmp_path / "a" / "REPORT.md").read_text()
    assert "| RAE" in report and "| BetaVAE" in report
    assert "RAE SSE" in report  # the notes read the family's own display metadata
    steps = (tmp_path / "a" / "results").rglob("*-rae-seed0.steps.csv")
    assert "train/embedding_loss" in next(steps).read_text().splitlines()[0]

    # the same configuration with another seed, in another folder, compared with the first
    assert run(tmp_path / "b", "--seeds", "1") == 0
    capsys.readouterr()
    code = main(["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    assert "rae" in captured.out


def test_a_dataset_is_one_catalogue_entry(parquet_repo, tmp_path, monkeypatch, capsys):
    """A hub dataset, pinned, read from the data mirror (MIRROR/owner/name): one entry."""
    mirror = parquet_repo.parent.parent  # .../hub, holding someone/blobs
    entry = DatasetSpec("blobs", "someone/blobs", None, description="blob images")
    monkeypatch.setitem(DATASETS, "blobs", entry)
    code = main(
        ["run", "--datasets", "blobs", "--models", "betavae", "--data-mirror", str(mirror)]
        + ["--out", str(tmp_path), "--wandb", "off", *SETTINGS]
    )
    assert code == 0, capsys.readouterr().err
    (path,) = (tmp_path / "results").rglob("blobs-betavae-seed0.json")
    record = json.loads(path.read_text())
    assert record["dataset"] == "blobs" and record["dataset_info"]["source"] == "someone/blobs"
    assert main(["list"]) == 0 and "blobs" in capsys.readouterr().out


def test_a_per_image_metric_is_one_entry_from_computation_to_report(
    parquet_repo, tmp_path, monkeypatch, capsys
):
    """One `MetricInfo` with its function: evaluated in both sets, recorded, reported."""

    def brightness(x, x_hat):  # mean intensity of the reconstruction, per image
        return x_hat.clamp(0, 1).flatten(1).mean(dim=1)

    entry = MetricInfo("brightness", True, "all", "mean pixel intensity", per_image=brightness)
    monkeypatch.setitem(METRICS, "brightness", entry)
    code = main(
        ["run", "--datasets", str(parquet_repo), "--models", "betavae", "--out", str(tmp_path)]
        + ["--wandb", "off", *SETTINGS]
    )
    assert code == 0, capsys.readouterr().err
    (record,) = load_records(tmp_path)
    assert 0 < record.metrics["recon/brightness"] < 1 and "gen/brightness" in record.metrics
    assert "brightness" in FAMILIES.get("betavae").metric_keys
    report = (tmp_path / "REPORT.md").read_text()
    assert any(line.startswith("| brightness") for line in report.splitlines())
