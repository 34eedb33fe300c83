"""Hardening, second round: every write stays inside the folder the user named and never goes
through a symlink; the nightly gate cannot be switched off by a flag; every bad input is one
line and exit 2 before any cell; files are written with the user's umask."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_compare import write_suite

from benchmark import files
from benchmark.cli import main
from benchmark.records.cellfiles import CellFiles
from benchmark.running import cell as one_cell
from benchmark.running import runner
from benchmark.running.executors.slurm import JobArray
from benchmark.running.suites import expand_cells, resolve_suite
from conftest import TINY_SETTINGS, make_record, one_line_exit

SETTINGS = [*TINY_SETTINGS, "eval.fid=false"]


def tiny_run(repo: Path, out: Path, *more: str) -> list[str]:
    sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
    return [
        "run", "--datasets", str(repo), "--models", "betavae", "--out", str(out),
        "--wandb", "off", "--checkpoint-every", "1", *sets, *more,
    ]  # fmt: skip


@pytest.fixture
def no_training(monkeypatch):
    started: list = []
    monkeypatch.setattr(one_cell, "run_cell", lambda *a, **k: started.append(a))
    return started


# ---- 1. writes: inside, never through a symlink ---------------------------------------------


def test_no_write_follows_a_symlink_planted_at_any_path_the_run_writes(
    parquet_repo, tmp_path, capsys
):
    """Every file a run writes (found by running it once), replaced by a link to a victim file
    before the same run writes it again: the victims keep their content."""
    first = tmp_path / "first"
    assert main(tiny_run(parquet_repo, first)) == 0
    written = sorted(
        p.relative_to(first)
        for p in first.rglob("*")
        if p.is_file() and not p.name.startswith(".REPORT")
    )
    # the paths vaebench writes: records, steps, images, checkpoint, report, plots, images/
    suffixes = {p.name.split(".", 1)[-1] for p in written}
    assert {"json", "steps.csv", "samples.png", "reconstructions.png", "safetensors"} <= suffixes
    assert {Path("REPORT.md"), Path("summary.csv"), Path("summary.tex")} <= set(written)
    cell = next(p for p in written if p.suffix == ".json")
    extra = [  # written during a run and removed at its end: planted too
        cell.with_suffix(".claim"),
        cell.with_suffix(".resume.pt"),
    ]
    victims = tmp_path / "victims"
    victims.mkdir()
    second = tmp_path / "second"
    planted = {}
    for index, relative in enumerate([*written, *extra]):
        victim = victims / f"victim-{index}"
        victim.write_text("precious")
        link = second / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(victim)
        planted[relative] = victim
    assert main(tiny_run(parquet_repo, second)) == 0
    capsys.readouterr()
    for relative, victim in planted.items():
        assert victim.read_text() == "precious", relative
    assert json.loads((second / cell).read_text())["status"] == "ok"  # the link was replaced
    assert not (second / cell).is_symlink()


def test_a_history_folder_that_is_a_symlink_is_refused(parquet_repo, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(tiny_run(parquet_repo, out)) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "results" / "quick" / "history").symlink_to(elsewhere, target_is_directory=True)
    capsys.readouterr()
    # a changed config moves the old record to history/: refused, nothing written there
    err = one_line_exit(tiny_run(parquet_repo, out, "--set", "betavae.beta=2"), capsys)
    assert "history is a symbolic link" in err
    err = one_line_exit(["evaluate", str(out), "--sampler", "gmm"], capsys)
    assert "history is a symbolic link" in err
    assert list(elsewhere.iterdir()) == []


def test_report_records_from_wandb_refuse_a_symlinked_folder(tmp_path):
    from benchmark.report.sources import ReportInputs, dump_records

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "records").symlink_to(elsewhere, target_is_directory=True)
    cell = expand_cells(resolve_suite("quick", ["train.epochs=1"], ["betavae"]))[0]
    inputs = ReportInputs(records=[make_record(cell, metrics={"recon/mse": 1.0})])
    with pytest.raises(files.UnsafePath, match="records is a symbolic link"):
        dump_records(inputs, tmp_path / "report" / "records")
    assert list(elsewhere.iterdir()) == []


def test_baseline_and_markdown_replace_a_link_instead_of_following_it(tmp_path, capsys):
    records = write_suite(tmp_path / "records")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for option, args in (
        ("--write-baseline", ["compare", str(records)]),
        ("--markdown", ["compare", str(records), str(records)]),
    ):
        target = tmp_path / f"out{option}"
        target.symlink_to(victim)
        assert main([*args, option, str(target)]) == 0
        assert victim.read_text() == "precious" and not target.is_symlink()
    capsys.readouterr()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_are_written_with_the_users_umask(tmp_path, umask, mode):
    cell = expand_cells(resolve_suite("quick", ["train.epochs=1"], ["betavae"]))[0]
    previous = os.umask(umask)
    try:
        path = CellFiles.of(tmp_path, cell).record
        make_record(cell, metrics={"recon/mse": 1.0}).write(path)
        files.write_text(tmp_path / "REPORT.md", "# report\n")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode
    assert (tmp_path / "REPORT.md").stat().st_mode & 0o777 == mode


# ---- 2. the nightly gate --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--k", "nan"), ("--k", "inf"), ("--k", "0"), ("--k", "-1"), ("--k", "11"),
        ("--rel-tol", "nan"), ("--rel-tol", "inf"), ("--rel-tol", "-0.1"), ("--rel-tol", "0.6"),
    ],
)  # fmt: skip
def test_compare_refuses_a_flag_that_would_switch_the_gate_off(flag, value, tmp_path, capsys):
    baseline = write_suite(tmp_path / "a")
    err = one_line_exit(["compare", str(baseline), str(baseline), flag, value], capsys)
    assert f"{flag} must be a number" in err


@pytest.mark.parametrize("k", ["1e-9", "1", "3", "10"])
@pytest.mark.parametrize("rel_tol", ["0", "0.05", "0.5"])
def test_no_accepted_flag_value_lets_a_real_regression_pass(k, rel_tol, tmp_path, capsys):
    """VQVAE's recon/ssim drops from 0.80 to 0.30 (seed std 0.01): caught at every accepted
    setting of the gate."""
    baseline = write_suite(tmp_path / "a")
    regressed = write_suite(tmp_path / "b", ssim_shift=-0.5)
    code = main(["compare", str(baseline), str(regressed), "--k", k, "--rel-tol", rel_tol])
    assert code == 1
    assert "1 regressions" in capsys.readouterr().out


# ---- 3. every config value has a range, checked when the suite is resolved ------------------

BOUNDS = [
    ("train.epochs=0", "train.epochs"),
    ("train.epochs=100000000000000000000000000", "train.epochs"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.batch_size=10000000", "train.batch_size"),
    ("train.learning_rate=inf", "train.learning_rate"),
    ("train.learning_rate=nan", "train.learning_rate"),
    ("train.learning_rate=0", "train.learning_rate"),
    ("train.learning_rate=100", "train.learning_rate"),
    ("train.threads=0", "train.threads"),
    ("train.threads=100000", "train.threads"),
    ("data.image_size=100000", "data.image_size"),
    ("data.image_size=2", "data.image_size"),
    ("data.split_seed=-1", "data.split_seed"),
    ("data.split_seed=100000000000000000000", "data.split_seed"),
    ("data.max_train=0", "data.max_train"),
    ("data.max_train=100000000000", "data.max_train"),
    ("data.val_fraction=1", "data.val_fraction"),
    ("eval.n_gen=1000000000000", "eval.n_gen"),
    ("eval.n_gen=0", "eval.n_gen"),
    ("eval.seed=100000000000000000000", "eval.seed"),
    ("eval.seed=-1", "eval.seed"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("eval.gmm_components=100000", "eval.gmm_components"),
    ("eval.prior.epochs=1000000", "eval.prior.epochs"),
    ("eval.prior.kernel_size=33", "eval.prior.kernel_size"),
    ("eval.prior.learning_rate=inf", "eval.prior.learning_rate"),
    ("betavae.beta=inf", "betavae.beta"),
    ("betavae.latent_dim=100000", "betavae.latent_dim"),
    ("vqvae.num_embeddings=1", "vqvae.num_embeddings"),
    ("vqvae.num_embeddings=10000000", "vqvae.num_embeddings"),
    ("vqvae.decay=1.5", "vqvae.decay"),
    ("vaegan.adversarial_loss_scale=2", "vaegan.adversarial_loss_scale"),
    ("vaegan.encoder_learning_rate=nan", "vaegan.encoder_learning_rate"),
    ("slurm.time_min=100000000", "slurm.time_min"),
    ("slurm.cpus_per_job=0", "slurm.cpus_per_job"),
]


@pytest.mark.parametrize(("setting", "key"), BOUNDS)
def test_every_bound_is_one_line_before_any_cell(setting, key, capsys, no_training):
    err = one_line_exit(["run", "--set", setting, "--wandb", "off", "--dry-run"], capsys)
    assert f"invalid config value for '{key}'" in err
    assert not no_training


def test_a_batch_larger_than_the_training_split_is_refused_before_any_cell(
    parquet_repo, tmp_path, capsys, no_training
):
    err = one_line_exit(tiny_run(parquet_repo, tmp_path, "--set", "train.batch_size=5000"), capsys)
    assert "train.batch_size=5000 is larger than the training split" in err
    assert not no_training


@pytest.mark.parametrize("seeds", ["0,0", "1,2,1"])
def test_duplicated_seeds_are_refused(seeds, capsys):
    err = one_line_exit(["run", "--seeds", seeds, "--wandb", "off", "--dry-run"], capsys)
    assert "given more than once" in err


def test_duplicated_models_are_refused(capsys):
    err = one_line_exit(["run", "--models", "vqvae,vqvae", "--dry-run"], capsys)
    assert "model vqvae given more than once" in err


# ---- 4 and 5. bad input: exit 2, one line, before any cell ----------------------------------


def test_a_suite_file_that_is_not_utf8(tmp_path, capsys, no_training):
    suite = tmp_path / "suite.yaml"
    suite.write_bytes(b"models: [betavae]\n\xff\xfe\x00bad")
    for command in (["run", "--wandb", "off"], ["prepare"]):
        err = one_line_exit([*command, "--suite", str(suite)], capsys)
        assert "is not a UTF-8 text file" in err
    assert not no_training


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("method: grid\nparameters: null\n", "'parameters' must be a mapping"),
        ("method: grid\nparameters: [1, 2]\n", "'parameters' must be a mapping"),
        ("method: grid\nparameters: 3\n", "'parameters' must be a mapping"),
        ("method: grid\nparameters:\n  betavae.beta: 2\n", "parameter 'betavae.beta' must be"),
        (
            "method: grid\nparameters:\n  betavae.beta: {valuez: [1, 2]}\n",
            "is not a valid W&B sweep",
        ),
        (
            "method: grid\ncommand: [1, 2]\nparameters:\n  betavae.beta: {values: [1, 2]}\n",
            "'command' must be a list of strings",
        ),
        (b"method: grid\n\xff\xfe".decode("latin-1"), "is not a UTF-8 text file"),
    ],
)
def test_sweep_files_the_engine_would_crash_on(body, expected, tmp_path, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_bytes(body.encode("latin-1"))
    err = one_line_exit(["sweep", str(sweep), "--count", "1", "--out", str(tmp_path)], capsys)
    assert expected in err


def test_output_files_that_are_folders_or_have_no_folder(tmp_path, capsys):
    records = write_suite(tmp_path / "records")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    err = one_line_exit(["compare", str(records), "--write-baseline", str(folder)], capsys)
    assert "is a folder" in err
    err = one_line_exit(["compare", str(records), str(records), "--markdown", str(folder)], capsys)
    assert "is a folder" in err
    missing = tmp_path / "nonexistent" / "dir" / "b.json"
    err = one_line_exit(["compare", str(records), "--write-baseline", str(missing)], capsys)
    assert "no such folder" in err and not missing.parent.exists()
    report_file = tmp_path / "report.md"
    report_file.write_text("mine")
    err = one_line_exit(["report", str(records), "--out", str(report_file)], capsys)
    assert "is a file; give a folder" in err and report_file.read_text() == "mine"


@pytest.mark.parametrize("kind", ["file", "empty folder", "wrong column"])
def test_a_bad_dataset_is_one_line_before_any_cell(
    kind, parquet_repo, tmp_path, capsys, no_training
):
    extra: list[str] = []
    if kind == "file":
        dataset = tmp_path / "images.txt"
        dataset.write_text("not a dataset")
    elif kind == "empty folder":
        dataset = tmp_path / "empty"
        dataset.mkdir()
    else:
        dataset, extra = parquet_repo, ["--set", "data.image_column=pixels"]
    args = tiny_run(parquet_repo, tmp_path / "out", *extra)
    args[args.index("--datasets") + 1] = str(dataset)
    err = one_line_exit(args, capsys)
    assert str(dataset.name) in err or "pixels" in err
    assert not no_training


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_a_data_mirror_that_is_not_a_folder(kind, tmp_path, capsys, no_training):
    mirror = tmp_path / "mirror"
    if kind == "file":
        mirror.write_text("x")
    for command in (["run", "--wandb", "off", "--out", str(tmp_path / "out")],):
        err = one_line_exit([*command, "--data-mirror", str(mirror)], capsys)
        assert f"--data-mirror {mirror}" in err
    assert not no_training


def test_evaluate_on_a_folder_without_records(tmp_path, capsys):
    err = one_line_exit(["evaluate", str(tmp_path)], capsys)
    assert "no result records under" in err


def test_a_scheduler_that_refuses_the_jobs_is_one_line(tmp_path):
    class Refusing:
        def batch(self):
            raise RuntimeError("sbatch: error: invalid partition specified: gpux\nmore")

    cell = expand_cells(resolve_suite("quick", ["train.epochs=1"], ["betavae"]))[0]
    from benchmark.errors import UserInputError

    with pytest.raises(UserInputError) as refused:
        runner.run_cells([cell], tmp_path, executor=JobArray(Refusing()), log=lambda m: None)
    assert str(refused.value) == (
        "the scheduler refused the jobs: RuntimeError: sbatch: error: invalid partition "
        "specified: gpux"
    )
