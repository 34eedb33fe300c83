"""The command line: one clear line and exit 2 on bad input, a report at the end of a run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmark.cli import main
from conftest import TINY_SETTINGS


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmark", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--models", "vae-gan"], "unknown model 'vae-gan'; did you mean 'vaegan'?"),
        (["run", "--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
        (["run", "--datasets", "mnsit"], "unknown dataset 'mnsit'; did you mean 'mnist'?"),
        (["run", "--seeds", "x"], "expected a comma-separated list"),
        # an empty list would quietly run the suite's whole list
        (["run", "--models", ""], "expected at least one value, got ''"),
        (["run", "--datasets", " , "], "expected at least one value, got ' , '"),
        (["run", "--seeds", ""], "expected at least one value, got ''"),
        (["run", "--out", ""], "expected a folder, got ''"),
        (["run", "--out", "/"], "'/' is the filesystem's root; give a folder"),
        (["report", ".", "--out", "/../"], "is the filesystem's root"),
        (["run", "--suite", "nope.yaml"], "suite file not found: nope.yaml"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["report", "/no/such/dir"], "no such folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        code = main(args)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_real_process_prints_no_traceback():
    result = run_cli("run", "--models", "vae-gan")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vaebench run: error: unknown model 'vae-gan'; did you mean 'vaegan'? "
        "valid: betavae, vaegan, vqvae"
    ]


def test_version_names_the_package_version_and_its_commit(capsys):
    from importlib import metadata

    from benchmark.cli import main
    from benchmark.environment import git_sha

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    version = metadata.version("vaebench")
    sha = git_sha()
    assert (
        printed
        == f"vaebench {version}"
        + (f"+{sha[:12]}" if sha else "")
        + ("-dirty" if sha and sha.endswith("-dirty") else "")
        + "\n"
    )


def test_help_for_every_subcommand():
    for args in (["--help"], ["run", "--help"], ["report", "--help"], ["list", "--help"]):
        result = run_cli(*args)
        assert result.returncode == 0 and "usage: vaebench" in result.stdout


def test_run_writes_records_and_a_report_then_report_rebuilds_it(parquet_repo, tmp_path, capsys):
    sets = [arg for setting in TINY_SETTINGS for arg in ("--set", setting)]
    code = main(["run", "--datasets", str(parquet_repo), "--out", str(tmp_path), *sets])
    out = capsys.readouterr().out
    assert code == 0
    assert "3 ok, 0 failed" in out and "recon/" in out and "ssim" in out
    assert len(list((tmp_path / "results").rglob("*.json"))) == 3
    report = (tmp_path / "REPORT.md").read_text()
    assert "| VAEGAN" in report and "| BetaVAE" in report and "| VQVAE" in report
    (tmp_path / "REPORT.md").unlink()
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "REPORT.md").read_text() == report


def test_a_failed_cell_makes_the_run_exit_1(parquet_repo, tmp_path, capsys):
    sets = [arg for setting in TINY_SETTINGS for arg in ("--set", setting)]
    diverging = ["--set", "train.optimizer=SGD", "--set", "train.learning_rate=10"]
    code = main(
        ["run", "--datasets", str(parquet_repo), "--models", "betavae", "--out", str(tmp_path)]
        + ["--wandb", "off", *sets, *diverging]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED: TrainingDiverged: non-finite" in out


def test_dry_run_lists_cells_with_their_hashes(capsys):
    assert main(["run", "--dry-run", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "6 cells" in out and "mnist-5k-vaegan-seed1  config " in out


def test_a_closed_pipe_is_not_an_internal_error():
    """`vaebench run --dry-run | head -1`: the reader goes away; no crash log, no traceback."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "benchmark", "run", "--suite", "paper", "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # gone before the first line is written (it takes seconds to start)
    err = process.stderr.read()
    process.wait(timeout=120)
    assert process.returncode == 141
    assert b"internal error" not in err and b"Traceback" not in err
