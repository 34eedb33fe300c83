"""`vaebench compare`: regressions beyond seed noise are caught, noise and improvements are not,
mismatched configurations are refused."""

from __future__ import annotations

import json

import pytest

from benchmark.cli import main
from benchmark.records.results import Record
from benchmark.report.compare import compare, load_side, summarise
from benchmark.running.suites import expand_cells, resolve_suite
from conftest import write_record

SEEDS = [0, 1, 2]
NOISE = {0: -0.01, 1: 0.0, 2: 0.01}  # seed-to-seed spread of ssim


def write_suite(folder, ssim_shift=0.0, gmsd_shift=0.0, overrides=(), lpips=None):
    suite = resolve_suite(
        "quick", ["train.epochs=1", *overrides], models=["betavae", "vqvae"], seeds=SEEDS
    )
    for cell in expand_cells(suite):
        base = 0.8 if cell.model == "vqvae" else 0.5
        metrics = {
            "recon/ssim": base + NOISE[cell.seed] + (ssim_shift if cell.model == "vqvae" else 0.0),
            "recon/gmsd": 0.2 + NOISE[cell.seed] / 2 + gmsd_shift,
            "recon/mse": 20.0 + cell.seed,
        }
        parts = {}
        if lpips is not None:  # (weights label, value)
            metrics["recon/lpips"] = lpips[1] + NOISE[cell.seed] / 10
            parts["lpips"] = {"net": "vgg", "version": "0.1", "weights": lpips[0]}
        write_record(folder, cell, metrics=metrics, **parts)
    return folder


def verdicts(baseline, current, **kwargs):
    return {
        (d.model, d.metric): d.verdict
        for d in compare(load_side(baseline), load_side(current), **kwargs)
    }


def test_an_injected_regression_beyond_noise_is_caught(tmp_path):
    base = write_suite(tmp_path / "base")
    worse = write_suite(tmp_path / "worse", ssim_shift=-0.1)  # ten seed-stds down
    result = verdicts(base, worse)
    assert result[("vqvae", "recon/ssim")] == "regression"
    assert result[("betavae", "recon/ssim")] == "ok"


def test_changes_within_seed_noise_and_improvements_are_not_flagged(tmp_path):
    base = write_suite(tmp_path / "base")
    noisy = write_suite(tmp_path / "noisy", ssim_shift=-0.012, gmsd_shift=0.004)
    assert set(verdicts(base, noisy).values()) == {"ok"}
    better = write_suite(tmp_path / "better", ssim_shift=0.2, gmsd_shift=-0.1)
    result = verdicts(base, better)
    assert result[("vqvae", "recon/ssim")] == "improved"
    assert result[("betavae", "recon/gmsd")] == "improved"
    assert "regression" not in result.values()


def test_numbers_from_another_feature_network_are_not_compared(tmp_path):
    """LPIPS through other backbone weights is another ruler: no verdict, however far apart;
    the same weights on both sides are judged as usual."""
    base = write_suite(tmp_path / "base", lpips=("lpips-vgg16 sha256:aaaa", 0.10))
    other = write_suite(tmp_path / "other", lpips=("lpips-vgg16 sha256:bbbb", 0.40))
    same = write_suite(tmp_path / "same", lpips=("lpips-vgg16 sha256:aaaa", 0.40))
    assert verdicts(base, other)[("vqvae", "recon/lpips")] == "other network"
    assert verdicts(base, other)[("vqvae", "recon/ssim")] == "ok"
    assert verdicts(base, same)[("vqvae", "recon/lpips")] == "regression"


def test_lower_is_better_metrics_regress_upwards(tmp_path):
    base = write_suite(tmp_path / "base")
    worse = write_suite(tmp_path / "worse", gmsd_shift=0.1)
    assert verdicts(base, worse)[("betavae", "recon/gmsd")] == "regression"


def test_mismatched_configurations_are_refused_with_exit_2(tmp_path, capsys):
    base = write_suite(tmp_path / "base")
    other = write_suite(tmp_path / "other", overrides=["betavae.beta=4"])
    assert main(["compare", str(base), str(other)]) == 2
    err = capsys.readouterr().err
    assert "different configurations for mnist-5k|betavae" in err and err.count("\n") == 1


def test_cli_exit_codes_and_a_stored_baseline(tmp_path, capsys):
    base = write_suite(tmp_path / "base")
    worse = write_suite(tmp_path / "worse", ssim_shift=-0.1)
    baseline_file = tmp_path / "baseline.json"
    assert main(["compare", "--write-baseline", str(baseline_file), str(base)]) == 0
    stored = json.loads(baseline_file.read_text())
    assert stored["cells"]["mnist-5k|vqvae"]["metrics"]["recon/ssim"]["n"] == 3
    assert main(["compare", str(baseline_file), str(base)]) == 0
    assert (
        main(["compare", str(baseline_file), str(worse), "--markdown", str(tmp_path / "delta.md")])
        == 1
    )
    out = capsys.readouterr().out
    assert "| mnist-5k  | vqvae    | recon/ssim" in out and "regression" in out
    assert "regression" in (tmp_path / "delta.md").read_text()


def test_a_missing_cell_is_a_regression(tmp_path):
    base = write_suite(tmp_path / "base")
    current = write_suite(tmp_path / "current")
    for path in (current / "results").rglob("*vqvae-seed*.json"):
        path.unlink()
    assert verdicts(base, current)[("vqvae", "recon/ssim")] == "missing"


def test_summary_statistics(tmp_path):
    summary = summarise(
        [Record.read(p) for p in (write_suite(tmp_path / "s") / "results").rglob("*.json")]
    )
    ssim = summary["cells"]["mnist-5k|vqvae"]["metrics"]["recon/ssim"]
    assert ssim["mean"] == pytest.approx(0.8) and ssim["std"] == pytest.approx(0.01)
