"""sweeps/: valid W&B sweeps whose parameters reach the model or trainer; local sweeps; agents."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from wandb_log import complete_records, find_runs, read_run

from benchmark.cli import main
from benchmark.models import FAMILIES
from benchmark.models.vqvae import latent_elements
from benchmark.running.suites import expand_cells, resolve_suite
from benchmark.running.sweeping import expand_command, load_sweep, overrides_from_args
from benchmark.train.training import UInt8Images
from conftest import TINY_SETTINGS

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))
SHAPES = {
    "mnist-5k": (1, 28, 28),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "celeba": (3, 64, 64),
}


def test_the_four_sweeps_exist_and_are_valid():
    assert {p.stem for p in SWEEPS} >= {
        "suite",
        "betavae_beta",
        "vaegan_adversarial",
        "vqvae_codebook",
    }
    for path in SWEEPS:
        config = load_sweep(path)  # W&B's schema, through the `sweeps` package
        assert "${args}" in config["command"] and config["command"][:2] == ["vaebench", "run"]


def _sample(spec: dict):
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][-1]
    return spec["min"] + 0.37 * (spec["max"] - spec["min"])


def _reached(cell, key: str, value, tmp_path) -> bool:
    """Does the swept value arrive in the pythae model or trainer config of the cell?"""
    if key == "models":
        return cell.model == value
    if key == "datasets":
        return cell.dataset == value
    if key == "seeds":
        return cell.seed == int(value)
    family = FAMILIES.get(cell.model)
    params = family.params_model(**cell.params)
    model = family.build(params, SHAPES[cell.dataset], cell.arch)
    data = UInt8Images(torch.zeros((8, *SHAPES[cell.dataset]), dtype=torch.uint8))
    trainer = family.make_trainer(
        model, data, None, params, cell.train, cell.seed, str(tmp_path), "cpu", None
    )
    section, name = key.split(".", 1)
    if name.endswith("_loss_factor") and getattr(params, "vq_loss_reduction", "") == "sum":
        value = value * latent_elements(model.encoder, SHAPES[cell.dataset])  # per-image sum
    places = [model.model_config, getattr(model, "quantizer", None), model, trainer.training_config]
    found = [getattr(place, name) for place in places if place is not None and hasattr(place, name)]
    return bool(found) and all(v == pytest.approx(value) for v in found)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_parameter_reaches_the_model_or_trainer_config(path, tmp_path):
    config = load_sweep(path)
    params = {key: _sample(spec) for key, spec in config["parameters"].items()}
    command = expand_command(config, params)
    suite_name = command[command.index("--suite") + 1]
    assert config["command"][-1] == "${args}"
    args = command[-len(params) :]  # what ${args} expanded to
    overrides, selections = overrides_from_args(args)
    suite = resolve_suite(
        suite_name,
        overrides,
        selections.get("models"),
        selections.get("datasets"),
        [int(s) for s in selections["seeds"]] if "seeds" in selections else None,
    )
    cells = expand_cells(suite)
    assert len(cells) == 1  # an agent's run is one cell
    for key, value in params.items():
        assert _reached(cells[0], key, value, tmp_path), key


def test_both_forms_of_agent_arguments_are_understood():
    equals = overrides_from_args(["--betavae.beta=2.5", "--models=betavae"])
    spaced = overrides_from_args(["--betavae.beta", "2.5", "--models", "betavae"])
    assert equals == spaced == (["betavae.beta=2.5"], {"models": ["betavae"]})


def _tiny_sweep(tmp_path, parquet_repo) -> Path:
    fixed = {s.split("=")[0]: {"value": yaml.safe_load(s.split("=")[1])} for s in TINY_SETTINGS}
    sweep = {
        "method": "grid",
        "metric": {"name": "recon/mse", "goal": "minimize"},
        "parameters": {
            "betavae.beta": {"values": [0.5, 1.0, 2.0]},
            "models": {"value": "betavae"},
            "datasets": {"value": str(parquet_repo)},
            **fixed,
        },
        "command": [
            "${env}",
            "${interpreter}",
            "-m",
            "benchmark",
            "run",
            "--wandb",
            "off",
            "${args}",
        ],
    }
    path = tmp_path / "tiny_sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_a_local_sweep_runs_each_trial_with_its_values(tmp_path, parquet_repo):
    path = _tiny_sweep(tmp_path, parquet_repo)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark",
            "sweep",
            str(path),
            "--count",
            "5",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exhausted after 3 trials" in result.stdout
    summary = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [t["params"]["betavae.beta"] for t in summary["trials"]] == [0.5, 1.0, 2.0]
    for trial in summary["trials"]:
        records = list(Path(trial["out"]).rglob("*-betavae-seed0.json"))
        record = json.loads(records[0].read_text())
        assert record["config"]["params"]["beta"] == trial["params"]["betavae.beta"]
        assert record["config"]["train"]["epochs"] == 1
        assert trial["value"] == pytest.approx(record["metrics"]["recon/mse"])


def test_under_a_sweep_agent_the_run_attaches_and_takes_its_parameters(tmp_path, parquet_repo):
    """What `wandb agent` does: start a run id, write the trial's parameters to a file, set the
    WANDB_SWEEP_* variables, then run the sweep's command with ${args}."""
    params = {"betavae.beta": 3.0, "models": "betavae"}
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"wandb_version": 1, **{k: {"value": v} for k, v in params.items()}})
    )
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SWEEP_ID": "sweep1",
        "WANDB_RUN_ID": "trial1",
        "WANDB_SWEEP_PARAM_PATH": str(tmp_path / "params.yaml"),
        "WANDB_DIR": str(tmp_path),
    }
    env.pop("VAEBENCH_OUT", None)
    # an agent's command owns its W&B service; inheriting this test process's (set once an
    # in-process test used W&B) would share run ids and an unflushed log across processes
    env.pop("WANDB_SERVICE", None)
    sets = [a for s in TINY_SETTINGS for a in ("--set", s)]
    command = [
        sys.executable,
        "-m",
        "benchmark",
        "run",
        "--datasets",
        str(parquet_repo),
        *sets,
        "--betavae.beta",
        "3.0",
        "--models=betavae",
    ]  # ${args_no_equals} + ${args} forms
    result = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record_file = next((tmp_path / "vaebench-runs" / "sweep-sweep1" / "trial1").rglob("*.json"))
    record = json.loads(record_file.read_text())
    assert record["config"]["params"]["beta"] == 3.0
    run = read_run(find_runs(tmp_path)[0])
    assert run.run.run_id == "trial1" and run.run.sweep_id == "sweep1"
    assert run.config["betavae.beta"] == 3.0
    assert run.summary["recon/ssim"] == pytest.approx(record["metrics"]["recon/ssim"])
    # every sweep's metric.name is a key such a run really logs (gen/cfd: as unavailable on
    # this dataset, which has no class labels)
    for path in SWEEPS:
        name = load_sweep(path)["metric"]["name"]
        assert name in run.summary or f"unavailable/{name}" in run.summary, name


def test_a_sweep_run_stopped_by_sigterm_is_marked_preempting_and_its_rerun_resumes(
    tmp_path, parquet_repo
):
    """SIGTERM under an agent (a scheduler's preemption): the run asks W&B to requeue it
    (`mark_preempting`); the requeued run, same id, continues the cell where it stopped."""
    from test_resume import KILLER

    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SWEEP_ID": "sweep1",
        "WANDB_RUN_ID": "trial1",
        "WANDB_DIR": str(tmp_path),
        "PYTHONPATH": str(Path(__file__).parent),
    }
    env.pop("VAEBENCH_OUT", None)
    # an agent's command owns its W&B service; inheriting this test process's (set once an
    # in-process test used W&B) would share run ids and an unflushed log across processes
    env.pop("WANDB_SERVICE", None)
    sets = [a for s in [*TINY_SETTINGS, "train.epochs=3"] for a in ("--set", s)]
    args = [
        "run", "--datasets", str(parquet_repo), *sets, "--models=betavae",
        "--checkpoint-every", "1",
    ]  # fmt: skip
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, "training", "SIGTERM", *args],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == 143, killed.stderr[-2000:]
    (first,) = find_runs(tmp_path)
    kinds = [r.WhichOneof("record_type") for r in complete_records(first)]
    assert "preempting" in kinds

    again = subprocess.run(
        [sys.executable, "-m", "benchmark", *args],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from the rolling checkpoint after epoch 2/3" in again.stdout
    folder = tmp_path / "vaebench-runs" / "sweep-sweep1" / "trial1"
    record = json.loads(next(folder.rglob("*-betavae-seed0.json")).read_text())
    assert record["status"] == "ok" and record["training"]["resumed_after_epoch"] == 2


def test_every_sweep_optimises_a_registered_metric_in_its_direction_never_self_consistency():
    from benchmark.metrics.registry import METRICS

    for path in SWEEPS:
        metric = load_sweep(path)["metric"]
        prefix, _, name = metric["name"].partition("/")
        info = METRICS[name]
        assert prefix in ("recon", "gen"), path.name
        assert metric["goal"] == ("maximize" if info.higher_is_better else "minimize"), path.name
        # gen/'s pixel metrics compare a sample with its own reconstruction (docs/metrics.md)
        assert prefix == "recon" or info.realism, path.name


def _two_trials_at_once(tmp_path, parquet_repo, **parameters) -> list[str]:
    """`vaebench sweep` of the tiny sweep with `parameters` changed, two trials, both at once."""
    sweep = yaml.safe_load(_tiny_sweep(tmp_path, parquet_repo).read_text())
    sweep["parameters"].update(parameters)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return [sys.executable, "-m", "benchmark", "sweep", str(path), "--count", "2"] + [
        "--out",
        str(tmp_path / "out"),
        "--parallel",
        "2",
    ]


def test_a_local_sweep_runs_trials_side_by_side_with_parallel(tmp_path, parquet_repo):
    command = _two_trials_at_once(
        tmp_path,
        parquet_repo,
        **{"betavae.beta": {"values": [0.5, 2.0]}, "train.threads": {"value": 1}},
    )
    out = tmp_path / "out"
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    started = [i for i, line in enumerate(lines) if " started (process " in line]
    exited = [i for i, line in enumerate(lines) if " exited 0" in line]
    assert len(started) == len(exited) == 2 and max(started) < min(exited)  # two at once
    summary = json.loads((out / "sweep.json").read_text())
    for trial in summary["trials"]:
        # each trial's own output, not interleaved on the terminal
        assert "vaebench: 1 ok, 0 failed" in (Path(trial["out"]) / "trial.log").read_text()
        assert trial["value"] is not None


def test_sweep_settings_are_refused_in_one_line(tmp_path, parquet_repo, capsys):
    path = _tiny_sweep(tmp_path, parquet_repo)
    for args, words in [
        (["--parallel", "0"], "--parallel must be at least 1"),
        (["--set", "train.epochs=3"], "only slurm.KEY=VALUE settings, with --executor slurm"),
        (["--set", "slurm.cpus_per_job=0"], "slurm.cpus_per_job"),
    ]:
        executor = ["--executor", "slurm"] if args[0] == "--set" and "slurm." in args[1] else []
        code = main(["sweep", str(path), "--out", str(tmp_path / "out"), *args, *executor])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and words in err, err


def test_a_sweep_stopped_by_sigterm_stops_its_running_trials(tmp_path, parquet_repo):
    command = _two_trials_at_once(tmp_path, parquet_repo, **{"train.epochs": {"value": 100000}})
    out = tmp_path / "out"
    sweep_process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in sweep_process.stdout:
        seen.append(line)
        if "trial 1 started" in line:
            break
    logs = [out / "trial-0" / "trial.log", out / "trial-1" / "trial.log"]
    deadline = time.monotonic() + 120
    while not all("epoch 1/" in log.read_text() for log in logs):  # both are training
        assert time.monotonic() < deadline, "".join(seen)
        time.sleep(0.5)
    sweep_process.send_signal(signal.SIGTERM)
    output = "".join(seen) + sweep_process.communicate(timeout=120)[0]
    assert sweep_process.returncode == 143, output
    assert "sweep: stopped 2 running trials" in output and "Traceback" not in output
    assert json.loads((out / "sweep.json").read_text())["trials"] == []
    for log in logs:  # each trial took the preemption path: its rolling state is kept
        assert "vaebench: terminated" in log.read_text()
