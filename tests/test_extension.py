"""What it costs to extend vaebench, proved end to end: a fourth family is one file
(`tests/families/rae.py`, nowhere in the package), a per-image metric one registry entry, a
dataset one catalogue entry, an executor and a tracker one module each (`tests/extensions/`)."""

from __future__ import annotations

import json

import pytest

from benchmark.cli import main
from benchmark.data.catalogue import DATASETS, DatasetSpec
from benchmark.metrics.providers import PROVIDERS
from benchmark.metrics.registry import METRICS, MetricInfo, metrics_of
from benchmark.models import FAMILIES
from benchmark.records.results import Record, iter_records, load_records
from benchmark.running.executors import EXECUTORS
from benchmark.tracking import TRACKERS
from conftest import TINY_SETTINGS
from extensions import jsonl_tracker, mean_gap_provider, reverse_executor
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
        f"{prefix}/{key}" for key in metrics_of(rae_registered) for prefix in METRICS[key].sets
    }
    assert set(record.metrics) | set(record.unavailable) == expected
    assert not {"recon/kl", "recon/elbo", "recon/active_units"} & set(record.metrics)
    assert record.sampler["name"] == "gmm"  # the family's first sampler is its default

    report = (tmp_path / "a" / "REPORT.md").read_text()
    assert "| RAE" in report and "| BetaVAE" in report
    assert "RAE SSE" in report  # the notes read the family's own display metadata
    steps = (tmp_path / "a" / "results").rglob("*-rae-seed0.steps.csv")
    assert "train/embedding_loss" in next(steps).read_text().splitlines()[0]

    # compare reads the family: the same records are no regression; the RAE's recon/ssim
    # dropped from its value to a tenth of it is one, and the line names the RAE
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    assert "0 regressions" in capsys.readouterr().out
    for path, kept in iter_records(tmp_path / "a"):
        data = kept.as_dict()
        if kept.model == "rae":
            data["metrics"]["recon/ssim"] = kept.metrics["recon/ssim"] / 10
        copy = tmp_path / "worse" / path.relative_to(tmp_path / "a")
        copy.parent.mkdir(parents=True, exist_ok=True)
        Record.parse(data, "edited").write(copy)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "worse")]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "regression" in line]
    assert any("rae" in line and "recon/ssim" in line for line in lines), lines
    assert not any("betavae" in line for line in lines[:-1]), lines


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
    assert "brightness" in metrics_of(FAMILIES.get("betavae"))
    report = (tmp_path / "REPORT.md").read_text()
    assert any(line.startswith("| recon/brightness") for line in report.splitlines())


def test_a_set_level_metric_is_one_provider_entry(parquet_repo, tmp_path, monkeypatch, capsys):
    """`tests/extensions/mean_gap_provider.py`: a provider and its metric entry, registered,
    are scored on both sets (each the set's own number, from its scorer's update/compute),
    recorded with provenance, re-scored by `vaebench evaluate --metrics`, and reported."""
    monkeypatch.setitem(METRICS, "mean_gap", mean_gap_provider.METRIC)
    PROVIDERS.add("mean_gap", mean_gap_provider.PROVIDER)
    try:
        code = main(
            ["run", "--datasets", str(parquet_repo), "--models", "betavae", "--out", str(tmp_path)]
            + ["--wandb", "off", *SETTINGS]
        )
        assert code == 0, capsys.readouterr().err
        (record,) = load_records(tmp_path)
        assert {"recon/mean_gap", "gen/mean_gap"} <= set(record.provenance)
        assert 0 <= record.metrics["recon/mean_gap"] < 1 and mean_gap_provider.LOADS == ["cpu"]
        report = (tmp_path / "REPORT.md").read_text()
        assert any(line.startswith("| recon/mean_gap") for line in report.splitlines())
        capsys.readouterr()
        assert main(["evaluate", str(tmp_path), "--metrics", "recon/mean_gap"]) == 0
        assert f"recon/mean_gap {record.metrics['recon/mean_gap']:.4g}" in capsys.readouterr().out
        (again,) = load_records(tmp_path)
        assert again.metrics == record.metrics  # computed again: the same model, same numbers
    finally:
        PROVIDERS.remove("mean_gap")
        mean_gap_provider.LOADS.clear()


@pytest.fixture
def reverse_registered():
    EXECUTORS.add("reverse", reverse_executor.PLUGIN)
    yield reverse_executor.PLUGIN
    EXECUTORS.remove("reverse")
    reverse_executor.PLUGIN.made.clear()


def test_an_executor_is_one_module(reverse_registered, parquet_repo, tmp_path, capsys):
    """`tests/extensions/reverse_executor.py`, registered: its name and option are on the
    command line, its check runs before any work, its cells train, record, resume and report."""
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    assert "{local,reverse,slurm}" in help_text and "--reverse-limit" in help_text

    def run(*more):
        return main(
            ["run", "--datasets", str(parquet_repo), "--models", "betavae,vqvae"]
            + ["--out", str(tmp_path), "--wandb", "off", "--executor", "reverse", *SETTINGS, *more]
        )

    assert run("--reverse-limit", "1") == 2  # its own check, before any work
    assert "runs at most 1 cells" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
    assert run() == 0
    out = capsys.readouterr().out
    (made,) = reverse_registered.made
    assert [cell.rsplit("-", 2)[1] for cell in made.ran] == ["vqvae", "betavae"]
    assert out.index("[2/2] ") < out.index("[1/2] ")  # its order, as it ran them
    assert {r.model for r in load_records(tmp_path)} == {"betavae", "vqvae"}
    assert (tmp_path / "REPORT.md").exists()
    assert run() == 0  # resume: both finished, nothing handed to the executor
    assert reverse_registered.made[-1].ran == []
    assert capsys.readouterr().out.count("skipped") == 2


@pytest.fixture
def jsonl_registered():
    TRACKERS.add("jsonl", jsonl_tracker.PLUGIN)
    yield jsonl_tracker.PLUGIN
    TRACKERS.remove("jsonl")


def test_a_tracker_is_one_module(jsonl_registered, parquet_repo, tmp_path, capsys):
    """`tests/extensions/jsonl_tracker.py`, registered: `--tracker jsonl` streams every step,
    the record names its run, and `vaebench evaluate` updates that run through the plug-in."""
    code = main(
        ["run", "--datasets", str(parquet_repo), "--models", "betavae", "--out", str(tmp_path)]
        + ["--tracker", "jsonl", "--jsonl-name", "calls.jsonl", *SETTINGS]
    )
    assert code == 0, capsys.readouterr().err
    (record,) = load_records(tmp_path)
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    cell = calls[0]["cell"]
    assert cell.endswith("-betavae-seed0")
    assert record.tracker_run == {
        "tracker": "jsonl",
        "path": str(tmp_path / "calls.jsonl"),
        "mode": "file",
        "cell": cell,
    }
    kinds = [call["kind"] for call in calls]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    assert kinds.count("step") == record.training["steps"]
    assert {k: calls[-1]["summary"][k] for k in record.metrics} == record.metrics
    assert not list(tmp_path.rglob("wandb"))  # W&B, the default, was not used

    assert main(["evaluate", str(tmp_path), "--metrics", "recon/mse"]) == 0
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert calls[-1]["kind"] == "update" and calls[-1]["cell"] == cell
    (rescored,) = load_records(tmp_path)
    assert calls[-1]["summary"]["recon/mse"] == rescored.metrics["recon/mse"]
