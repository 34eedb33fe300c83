"""Bad input fails before any work with one line; faults exit with their own codes; the report
and the module structure take what the hardening issue asked for."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.cli import main
from benchmark.errors import UserInputError
from benchmark.records.cellfiles import CellFiles
from benchmark.records.results import Record
from benchmark.report import from_directory, write_report
from benchmark.running import runner
from benchmark.running.suites import expand_cells, resolve_suite
from conftest import TINY_SETTINGS, one_line_exit, write_record

PACKAGE = Path(__file__).resolve().parents[1] / "benchmark"


def test_out_that_is_a_file_fails_before_training(tmp_path, capsys, monkeypatch):
    trained = []
    monkeypatch.setattr("benchmark.running.cell.run_cell", lambda *a, **k: trained.append(1))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    err = one_line_exit(["run", "--wandb", "off", "--out", str(blocker)], capsys)
    assert f"cannot write results to {blocker}" in err and not trained


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_fails_when_the_suite_is_resolved(capsys):
    err = one_line_exit(["run", "--set", "train.device=cuda", "--wandb", "off"], capsys)
    assert "train.device=cuda but this machine has no CUDA device" in err


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seeds_outside_what_torch_accepts_fail_up_front(seed, capsys):
    err = one_line_exit(["run", "--seeds", seed, "--wandb", "off"], capsys)
    assert "invalid config value for 'seeds.0'" in err


@pytest.mark.parametrize(
    "content", [b"[1, 2, 3]", b"\x89PNG\r\n\x1a\n\x00\xff", b'{"schema": "vaebench-baseline/1"}']
)
def test_compare_refuses_a_baseline_that_is_not_one(content, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    baseline.write_bytes(content)
    err = one_line_exit(["compare", str(baseline), str(tmp_path)], capsys)
    assert f"{baseline} is not a" in err


def test_slurm_settings_refuse_control_characters(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "datasets: [mnist-5k]\nmodels: [betavae]\nseeds: [0]\nslurm:\n"
        '  partition: "gpu\\n#SBATCH --account=someone-else"\n'
    )
    with pytest.raises(UserInputError, match="slurm.partition"):
        resolve_suite(str(suite))


def test_an_internal_error_is_one_line_a_log_and_exit_3(monkeypatch, capsys):
    def broken(args, extra):
        raise KeyError("a bug, not bad input")

    monkeypatch.setattr("benchmark.cli.commands.list_command", broken)
    err = one_line_exit(["list"], capsys, code=3)
    assert err.startswith("vaebench list: internal error: KeyError:")
    log = Path(err.split("(traceback in ")[1].rstrip(")\n"))
    try:
        assert "Traceback" in log.read_text() and "a bug, not bad input" in log.read_text()
    finally:
        log.unlink()


def test_sigterm_is_handled_like_ctrl_c_with_exit_143(parquet_repo, tmp_path):
    args = ["run", "--datasets", str(parquet_repo), "--models", "vqvae", "--seeds", "0,1"]
    args += ["--wandb", "off", "--out", str(tmp_path)]
    args += [f"--set={s}" for s in TINY_SETTINGS] + ["--set=train.epochs=200"]
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmark", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in process.stdout:
        if "epoch 2/200" in line:
            break
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 143, output
    assert "terminated; finished cells are kept" in output and "Traceback" not in output
    assert not list(tmp_path.rglob("*.claim")) and not list(tmp_path.rglob("*.tmp"))


def test_a_family_the_report_does_not_know_gets_a_colour_and_a_column(tmp_path):
    suite = resolve_suite("quick", ["train.epochs=1"], seeds=[0])
    for index, cell in enumerate([*expand_cells(suite), expand_cells(suite)[0]]):
        if index == 3:  # a fourth family, e.g. a W&B run of another model
            cell = cell.model_copy(update={"model": "rae"})
        metrics = {f"{p}/{k}": 0.1 * (index + 1) for p in ("recon", "gen") for k in ("ssim", "mse")}
        write_record(tmp_path, cell, metrics=metrics)
    report = write_report(from_directory(tmp_path), tmp_path / "report").read_text()
    header = next(line for line in report.splitlines() if "VAEGAN" in line and "|" in line)
    assert header.replace(" ", "").startswith("||VAEGAN|BetaVAE|VQVAE|rae|")
    assert (tmp_path / "report" / "mnist-5k-reconstruction.png").exists()


def test_pythae_is_patched_in_one_module_only():
    """Everything that replaces a pythae attribute at run time lives in pythae_compat.py."""
    patching = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if any(p in text for p in ("module.deepcopy =", ".save_model =", "module.F =")):
            patching.append(path.name)
    assert patching == ["pythae_compat.py"]


# ---- records: one typed model; bad files are named, skipped, kept ------------------------------

BAD_RECORDS = {
    "binary": b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
    "a JSON list": b"[1, 2, 3]",
    "no dataset": None,  # a real record without its dataset
    "unsafe model": None,  # a real record whose model would become a path outside
}


def _bad_record(kind: str, good: Record) -> bytes:
    if BAD_RECORDS[kind] is not None:
        return BAD_RECORDS[kind]
    record = good.as_dict()
    if kind == "no dataset":
        del record["dataset"]
    else:
        record["model"] = "betavae/../../../../tmp/x"
    return json.dumps(record).encode()


@pytest.fixture
def one_good_cell(tmp_path):
    cell = expand_cells(resolve_suite("quick", TINY_SETTINGS, models=["betavae"]))[0]
    metrics = {f"{p}/{k}": 0.5 for p in ("recon", "gen") for k in ("ssim", "mse")}
    return cell, write_record(tmp_path, cell, metrics=metrics)


@pytest.mark.parametrize("kind", list(BAD_RECORDS))
def test_report_and_compare_skip_a_bad_record_with_one_warning(
    kind, one_good_cell, tmp_path, capsys
):
    _, good = one_good_cell
    bad = tmp_path / "results" / "quick" / "mnist-5k-vqvae-seed0.json"
    bad.write_bytes(_bad_record(kind, good))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"skipped {bad}" in err and "Traceback" not in err
    assert re.search(r"\|\s+BetaVAE\s+\|", (tmp_path / "report" / "REPORT.md").read_text())
    assert not Path("/tmp/x.reconstructions.png").exists()
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 0
    assert f"skipped {bad}" in capsys.readouterr().err


@pytest.mark.parametrize("kind", list(BAD_RECORDS))
def test_run_retrains_over_a_bad_record_and_keeps_it_aside(kind, one_good_cell, tmp_path):
    cell, good = one_good_cell
    path = CellFiles.of(tmp_path, cell).record
    content = _bad_record(kind, good)
    path.write_bytes(content)
    logs: list[str] = []
    (record,) = runner.run_cells([cell], tmp_path, log=logs.append)
    assert record.status == "ok" and json.loads(path.read_text()) == record.as_dict()
    (aside,) = path.parent.glob(f"{path.name}.invalid-*")
    assert aside.read_bytes() == content
    assert any(f"kept as {aside.name}" in line for line in logs)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "name=../../tmp/escape"], "invalid config value for 'name'"),
        (["--set", "name=/tmp/escape"], "invalid config value for 'name'"),
        (["--models", "../betavae"], "unknown model '../betavae'"),
    ],
)
def test_names_that_become_paths_must_be_slugs(args, expected, tmp_path, capsys):
    err = one_line_exit(["run", "--wandb", "off", "--out", str(tmp_path), *args], capsys)
    assert expected in err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_a_suite_file_named_outside_is_refused(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: ../../escape\ndatasets: [mnist-5k]\nmodels: [betavae]\nseeds: [0]\n")
    out = tmp_path / "out"
    err = one_line_exit(["run", "--suite", str(suite), "--out", str(out), "--wandb", "off"], capsys)
    assert "invalid config value for 'name'" in err and not out.exists()


def test_records_of_another_config_survive_and_compare_picks_the_matching_one(
    parquet_repo, tmp_path, capsys
):
    """Two runners with different configs on one --out: the second keeps the first's record in
    history/, the report says so, and compare against that folder uses the matching config."""
    suite_a = resolve_suite(
        "quick", TINY_SETTINGS, models=["betavae"], datasets=[str(parquet_repo)]
    )
    suite_b = resolve_suite(
        "quick",
        [*TINY_SETTINGS, "betavae.beta=4"],
        models=["betavae"],
        datasets=[str(parquet_repo)],
    )
    (first,) = runner.run_suite(suite_a, tmp_path / "out", log=lambda m: None)
    logs: list[str] = []
    (second,) = runner.run_suite(suite_b, tmp_path / "out", log=logs.append)
    assert first.config_hash != second.config_hash
    cell = expand_cells(suite_a)[0]
    kept = CellFiles.of(tmp_path / "out", cell).record.parent / "history"
    kept_record = kept / f"{cell.cell_id}.{first.config_hash}.json"
    assert json.loads(kept_record.read_text()) == first.as_dict()
    assert (kept / f"{cell.cell_id}.{first.config_hash}.steps.csv").exists()
    assert any("kept in" in line for line in logs)
    assert main(["report", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "1 records of earlier configurations" in report and second.config_hash in report
    # the first config again, in another folder: compare it with the shared one
    runner.run_suite(suite_a, tmp_path / "again", log=lambda m: None)
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "out"), str(tmp_path / "again")]) == 0
    assert "different configurations" not in capsys.readouterr().err


def test_a_dry_run_runs_the_same_input_checks_as_a_run(tmp_path, capsys):
    """The checks that need no work are one place (`checks.check_run`), under --dry-run too:
    an unwritable results folder, a missing mirror, --jobs with SLURM. Nothing is created."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cases = [
        (["--out", str(blocker / "out")], f"cannot write results to {blocker / 'out'}: "),
        (["--data-mirror", str(tmp_path / "nowhere")], f"--data-mirror {tmp_path / 'nowhere'}: "),
        (["--executor", "slurm", "--jobs", "2"], "--jobs is for the local executor"),
    ]
    for more, expected in cases:
        err = one_line_exit(["run", "--dry-run", "--tracker", "off", *more], capsys)
        assert expected in err, err
    assert main(["run", "--dry-run", "--out", str(tmp_path / "new" / "out")]) == 0
    assert not (tmp_path / "new").exists()  # a dry run makes nothing
