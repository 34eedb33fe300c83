"""Nothing after training can throw training away.

Before any cell trains, `vaebench run` imports every piece a cell needs afterwards (a missing
one is one line and exit 2). Once a model has trained, a piece that fails (checkpoint, one
metric, the sampler, the images) is named with its reason in the record's `incomplete`, the
cell stays ok with all else it measured, and a rerun completes it from its kept weights
without training it again.
"""

from __future__ import annotations

import dataclasses
import sys

import pytest

from benchmark.cli import main
from benchmark.errors import UserInputError
from benchmark.metrics.registry import METRICS
from benchmark.records.cellfiles import CellFiles
from benchmark.records.results import Record
from benchmark.running import cell as cell_module
from benchmark.running import runner, scoring
from benchmark.running.suites import expand_cells, resolve_suite
from conftest import TINY_SETTINGS

SETTINGS = [*TINY_SETTINGS, "eval.fid=false"]


@pytest.fixture
def one_cell(parquet_repo):
    suite = resolve_suite("quick", SETTINGS, ["betavae"], [str(parquet_repo)], None)
    return suite, expand_cells(suite)[0]


def run(suite, out, logs: list[str]) -> dict:
    (record,) = runner.run_suite(suite, out, log=logs.append, checkpoint_every=0)
    return record


def trained(logs: list[str]) -> bool:
    """An epoch line (`    epoch 1/1  train/loss ...`), or the runner saying it trains."""
    return any(line.strip().startswith("epoch ") or ": training " in line for line in logs)


def test_a_checkpoint_writer_that_raises_keeps_the_cell_ok_and_a_rerun_completes_it(
    one_cell, tmp_path, monkeypatch
):
    suite, cell = one_cell

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cell_module, "save_checkpoint", disk_full)
    logs: list[str] = []
    first = run(suite, tmp_path, logs)
    assert trained(logs)
    assert first.status == "ok", first.error
    assert first.incomplete == {"checkpoint": "failed: OSError: [Errno 28] No space left on device"}
    assert {"recon/ssim", "recon/mse", "gen/ssim", "recon/kl"} <= set(first.metrics)
    path = CellFiles.of(tmp_path, cell).record
    assert not CellFiles(path).checkpoint.exists()
    assert CellFiles(path).resume.exists()  # the trained weights, kept for the rerun (every=0)
    assert any("(incomplete, a rerun completes it: checkpoint: failed" in line for line in logs)

    monkeypatch.undo()  # the disk has room again
    logs.clear()
    second = run(suite, tmp_path, logs)
    assert not trained(logs), logs  # completed from the kept weights, not trained again
    assert any(
        "finished earlier without checkpoint; completing it from its weights" in line
        for line in logs
    )
    assert second.status == "ok" and second.incomplete == {}
    assert CellFiles(path).checkpoint.exists() and not CellFiles(path).resume.exists()
    assert second.metrics == first.metrics  # the same weights, the same numbers
    assert second.training["epochs"] == first.training["epochs"]
    assert Record.read(path).incomplete == {}

    logs.clear()
    run(suite, tmp_path, logs)  # complete now: skipped
    assert any("finished earlier with the same config" in line for line in logs)


def test_one_metric_that_raises_costs_only_itself(one_cell, tmp_path, monkeypatch):
    suite, _ = one_cell

    def broken(x, x_hat):
        raise RuntimeError("ssim kernel exploded")

    monkeypatch.setitem(METRICS, "ssim", dataclasses.replace(METRICS["ssim"], per_image=broken))
    record = run(suite, tmp_path, [])
    assert record.status == "ok"
    reason = "failed: RuntimeError: ssim kernel exploded"
    assert record.incomplete == {"recon/ssim": reason, "gen/ssim": reason}
    assert record.unavailable["recon/ssim"] == reason
    assert "recon/ssim" not in record.metrics
    assert {"recon/mse", "recon/psnr", "gen/mse", "recon/kl", "recon/elbo"} <= set(record.metrics)

    monkeypatch.undo()
    logs: list[str] = []
    completed = run(suite, tmp_path, logs)
    assert not trained(logs)
    assert completed.incomplete == {} and "recon/ssim" in completed.metrics
    assert completed.metrics["recon/mse"] == record.metrics["recon/mse"]


def test_a_sampler_that_fails_to_fit_leaves_recon_measured(one_cell, tmp_path, monkeypatch):
    suite, cell = one_cell

    def no_fit(*args, **kwargs):
        raise ValueError("singular covariance")

    monkeypatch.setattr(scoring, "fit_sampler", no_fit)
    record = run(suite, tmp_path, [])
    assert record.status == "ok"
    assert record.incomplete == {"sampler": "failed: ValueError: singular covariance"}
    assert "recon/ssim" in record.metrics
    assert not any(key.startswith("gen/") for key in record.metrics)
    assert record.unavailable["gen/ssim"].startswith("failed: ValueError: singular")
    path = CellFiles.of(tmp_path, cell).record
    assert path.with_suffix(".reconstructions.png").exists()
    assert not path.with_suffix(".samples.png").exists()


def test_images_that_cannot_be_written_keep_the_cell_ok(one_cell, tmp_path, monkeypatch):
    suite, _ = one_cell

    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cell_module, "write_grids", unwritable)
    record = run(suite, tmp_path, [])
    assert record.status == "ok"
    assert set(record.incomplete) == {"images"}
    assert "gen/ssim" in record.metrics


def test_a_missing_piece_is_one_line_and_exit_2_before_any_training(
    parquet_repo, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # `import` now fails
    sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
    code = main(
        ["run", "--datasets", str(parquet_repo), "--out", str(tmp_path), "--wandb", "off", *sets]
    )
    captured = capsys.readouterr()
    assert code == 2
    (line,) = captured.err.strip().splitlines()
    assert "cannot start: the checkpoint writer needs 'safetensors'" in line
    assert "Nothing was trained" in line
    assert "training" not in captured.out and not (tmp_path / "results").exists()


def test_every_declared_piece_imports_here():
    from benchmark.cli.preflight import missing
    from benchmark.running.suites import builtin_suites

    for name in builtin_suites():
        assert missing(expand_cells(resolve_suite(name, [], None, None, None))) == []


def test_a_library_the_report_imports_in_turn_is_named_before_any_training(monkeypatch):
    """The report's own imports (seaborn, under `benchmark.report`) are checked by importing
    the report: the line names the package that is missing, not the report."""
    from benchmark.cli.preflight import check_after_training_pieces

    report = [m for m in sys.modules if m.split(".")[:2] == ["benchmark", "report"]]
    for name in report:  # imported afresh, as by a new process
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "seaborn", None)
    cells = expand_cells(resolve_suite("quick", ["train.epochs=1"], ["betavae"]))
    with pytest.raises(UserInputError) as raised:
        check_after_training_pieces(cells)
    line = str(raised.value)
    assert line.startswith("cannot start: the report needs 'seaborn' (ModuleNotFoundError: "), line
    assert line.endswith("or pip install seaborn") and "\n" not in line
