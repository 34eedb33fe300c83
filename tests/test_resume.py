"""Resume inside a cell: a cell killed mid-training (SIGKILL, SIGTERM) or in evaluation restarts
from its rolling checkpoint and ends with the record of an uninterrupted run."""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark.cli import main
from benchmark.config import RunConfig
from benchmark.records.cellfiles import CellFiles
from benchmark.records.results import Record
from benchmark.running.executors.slurm import CellJob
from benchmark.running.suites import resolve_suite
from benchmark.train.resume import RollingCheckpoint, TrainingState
from conftest import TINY_SETTINGS, child_pids

EPOCHS = 3
SETTINGS = [*TINY_SETTINGS, f"train.epochs={EPOCHS}", "eval.fid=false"]


def run_args(repo: Path, out: Path, model: str, every: int) -> list[str]:
    sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
    return [
        "run", "--suite", "quick", *sets, "--datasets", str(repo), "--models", model,
        "--out", str(out), "--wandb", "off", "--checkpoint-every", str(every),
    ]  # fmt: skip


# A real `vaebench run` in its own process that kills itself at a chosen point: after the
# rolling checkpoint of epoch 2 is on disk ("training"), or once training is over and the
# evaluation starts ("evaluation").
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import benchmark.train.resume, benchmark.running.cell
    from benchmark.cli import main

    where, signum = sys.argv[1], getattr(signal, sys.argv[2])
    save, score = benchmark.train.resume.RollingCheckpoint.save, benchmark.running.cell.score

    def save_then_die(self, state):
        save(self, state)
        if where == "training" and state.epochs_done == 2:
            os.kill(os.getpid(), signum)

    def die_in_evaluation(*args, **kwargs):
        os.kill(os.getpid(), signum)

    benchmark.train.resume.RollingCheckpoint.save = save_then_die
    if where == "evaluation":
        benchmark.running.cell.score = die_in_evaluation
    sys.exit(main(sys.argv[3:]))
    """
)


def run_and_kill(args: list[str], where: str, signum: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run(
        [sys.executable, "-c", KILLER, where, signum, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode


@pytest.fixture(scope="module")
def uninterrupted(parquet_repo, tmp_path_factory) -> Path:
    """Each family trained once without any rolling checkpoint: the records to reproduce."""
    out = tmp_path_factory.mktemp("uninterrupted")
    for model in ("betavae", "vqvae", "vaegan"):
        assert main(run_args(parquet_repo, out, model, every=0)) == 0
    assert not list((out / "results").rglob("*.resume.pt"))
    return out


def cell_of(out: Path, model: str) -> Path:
    (path,) = (out / "results").rglob(f"*-{model}-seed0.json")
    return path


def assert_same_record(resumed: Path, reference: Path) -> None:
    a, b = Record.read(resumed), Record.read(reference)
    assert a.status == b.status == "ok"
    assert a.config_hash == b.config_hash
    assert a.metrics.keys() == b.metrics.keys()
    for key, value in b.metrics.items():
        assert math.isclose(a.metrics[key], value, rel_tol=1e-5, abs_tol=1e-7), key
    losses = lambda record: [  # noqa: E731
        {k: v for k, v in epoch.items() if k != "epoch_seconds"}
        for epoch in record.training["epochs"]
    ]
    assert len(losses(a)) == EPOCHS
    for got, want in zip(losses(a), losses(b), strict=True):
        assert got.keys() == want.keys()
        assert all(math.isclose(got[k], want[k], rel_tol=1e-5) for k in want)
    assert a.training["steps"] == b.training["steps"]
    steps = [pd.read_csv(p.with_suffix(".steps.csv")) for p in (resumed, reference)]
    pd.testing.assert_frame_equal(*steps, rtol=1e-5)


@pytest.mark.parametrize(
    "model, signum, where",
    [
        ("betavae", "SIGKILL", "training"),
        ("vqvae", "SIGKILL", "training"),
        ("vaegan", "SIGKILL", "training"),  # three optimisers
        ("vaegan", "SIGTERM", "training"),  # SLURM's warning before a kill: exit 143
        ("vqvae", "SIGKILL", "evaluation"),  # trained, not scored: no epoch is run again
    ],
)
def test_a_killed_cell_resumes_and_ends_with_the_uninterrupted_record(
    model, signum, where, parquet_repo, uninterrupted, tmp_path, capsys
):
    args = run_args(parquet_repo, tmp_path, model, every=1)
    code = run_and_kill(args, where, signum)
    assert code == (-9 if signum == "SIGKILL" else 143)
    (rolling,) = (tmp_path / "results").rglob("*.resume.pt")
    assert not list((tmp_path / "results").rglob("*-seed0.json"))  # no record: it died
    state = torch.load(rolling, weights_only=True)
    assert state["epochs_done"] == (2 if where == "training" else EPOCHS)

    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    done = 2 if where == "training" else EPOCHS
    assert f"resuming from the rolling checkpoint after epoch {done}/{EPOCHS}" in printed
    epochs_run = [line for line in printed.splitlines() if line.strip().startswith("epoch ")]
    assert len(epochs_run) == EPOCHS - done
    resumed = cell_of(tmp_path, model)
    assert Record.read(resumed).training["resumed_after_epoch"] == done
    assert_same_record(resumed, cell_of(uninterrupted, model))
    assert not rolling.exists()  # gone with the ok record


def tiny_config(parquet_repo, model="vaegan") -> RunConfig:
    suite = resolve_suite("quick", SETTINGS, [model], [str(parquet_repo)], None)
    return suite.cells()[0]


def test_rolling_checkpoint_is_taken_every_n_epochs_and_after_the_last(parquet_repo, tmp_path):
    config = tiny_config(parquet_repo).model_copy(
        update={"train": tiny_config(parquet_repo).train.model_copy(update={"epochs": 7})}
    )
    rolling = RollingCheckpoint(tmp_path / "c.resume.pt", config, every=3)
    assert [e for e in range(1, 8) if rolling.due(e)] == [3, 6, 7]
    assert not any(RollingCheckpoint(tmp_path / "x", config, every=0).due(e) for e in range(8))


def test_a_rolling_checkpoint_of_another_config_or_not_ours_is_not_used(parquet_repo, tmp_path):
    config = tiny_config(parquet_repo)
    path = CellFiles.of(tmp_path, config).resume
    rolling = RollingCheckpoint(path, config, every=1)
    assert rolling.load() == (None, None)

    state = TrainingState(epochs_done=1, model={"w": torch.zeros(2)})
    other = config.model_copy(update={"seed": 5})
    RollingCheckpoint(path, other, every=1).save(state)
    assert rolling.load() == (None, f"{path.name} belongs to another configuration")

    rolling.save(state)
    loaded, why_not = rolling.load()
    assert (
        why_not is None
        and loaded.epochs_done == 1
        and torch.equal(loaded.model["w"], state.model["w"])
    )

    class Planted:  # a pickle that would run code when unpickled
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path.write_bytes(pickle.dumps({"format": "vaebench-resume/1", "x": Planted()}, protocol=2))
    loaded, why_not = rolling.load()
    assert loaded is None and "not a usable rolling checkpoint" in why_not
    # one line in our words: none of torch's advice to load it with weights_only=False
    assert "holds more than tensors" in why_not
    assert "\n" not in why_not and "weights_only" not in why_not
    assert not (tmp_path / "pwned").exists()

    path.write_bytes(b"\x00" * 10)  # a torn write from something else
    assert rolling.load()[0] is None


def test_a_stale_rolling_checkpoint_is_discarded_with_a_line(parquet_repo, tmp_path, capsys):
    config = tiny_config(parquet_repo, "betavae")
    out = tmp_path / "out"
    path = CellFiles.of(out, config).resume
    other = config.model_copy(update={"params": {**config.params, "beta": 3.0}})
    RollingCheckpoint(path, other, every=1).save(TrainingState(1, {"w": torch.zeros(1)}))
    args = run_args(Path(config.dataset), out, "betavae", every=0)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "belongs to another configuration: training from the first epoch" in printed
    assert not path.exists()


def test_a_slurm_job_is_requeued_as_the_same_call():
    """submitit requeues a preempted or timed-out job by calling its `checkpoint`; the cell's
    state is on disk, so the requeued job is the very same call."""
    import submitit

    job = CellJob()
    args = ("{}", "/out", "settings", "factory")
    again = job.checkpoint(*args)
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert again.function is job and again.args == args


def test_a_resumed_cells_tracker_gets_the_steps_and_epochs_trained_before():
    from benchmark.running.cell import _replay

    class Tracker:
        def __init__(self):
            self.calls = []

        def log_step(self, values):
            self.calls.append(("step", values["trainer/step"], values["trainer/epoch"]))

        def log_epoch(self, summary):
            self.calls.append(("epoch", summary["epoch"]))

    steps = [{"train/loss": float(i)} for i in range(6)]  # two epochs of three steps
    epochs = [{"epoch": 1.0, "val/loss": 1.0}, {"epoch": 2.0, "val/loss": 0.5}]
    tracker = Tracker()
    _replay(tracker, TrainingState(2, {}, steps=steps, epochs=epochs))
    assert tracker.calls == [
        ("step", 1, 1), ("step", 2, 1), ("step", 3, 1), ("epoch", 1.0),
        ("step", 4, 2), ("step", 5, 2), ("step", 6, 2), ("epoch", 2.0),
    ]  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_preempted_slurm_job_is_requeued_and_continues_its_cell(parquet_repo, tmp_path):
    """submitit's local executor does what SLURM does on preemption: the job gets the signal
    submitit asks SLURM for, checkpoints (CellJob.checkpoint), is requeued and runs again."""
    import time

    import submitit

    from benchmark.running.resources import MetricNetworks, RunSettings
    from benchmark.tracking.base import NullTracker

    config = tiny_config(parquet_repo, "vaegan")
    config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 40})})
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs" / "%j")
    executor.update_parameters(timeout_min=10)
    networks = MetricNetworks(
        lpips=lambda d, net="vgg": (None, "none"), features=lambda d: (None, "none")
    )
    job = executor.submit(
        CellJob(),
        config.model_dump_json(),
        str(tmp_path),
        RunSettings(None, networks, 1),
        NullTracker,
    )
    rolling = CellFiles.of(tmp_path, config).resume
    deadline = time.monotonic() + 240
    while not rolling.exists() and time.monotonic() < deadline and not job.done():
        time.sleep(0.02)
    assert rolling.exists(), "no rolling checkpoint before the job ended"
    # SLURM's preemption signal (submitit's USR2) to the job's task, as SLURM delivers it
    (task,) = child_pids(job._process.pid)
    os.kill(task, signal.SIGUSR2)
    record = job.result()
    log = job.stdout()
    assert "Requeued job" in log + job.stderr()
    (line,) = [x for x in log.splitlines() if "resuming from the rolling checkpoint" in x]
    done = int(line.split("after epoch ")[1].split("/")[0])
    assert 1 <= done < 40
    assert record.status == "ok" and record.training["resumed_after_epoch"] == done
    assert len(record.training["epochs"]) == 40
    assert not rolling.exists()


@pytest.mark.parametrize("name", ["betavae", "vqvae", "vaegan"])
def test_pythae_quirk_a_resumed_trainer_passes_epoch_1_again_and_no_family_uses_it(name):
    """pythae's trainers count epochs from 1 on every `train()` and hand `epoch` to the model's
    forward; a resumed trainer therefore says epoch 1 where an uninterrupted one says k + 1.
    That is harmless only while no family's loss depends on it (the recorder numbers epochs
    itself)."""
    from pythae.data.datasets import DatasetOutput

    from benchmark.models import FAMILIES

    family = FAMILIES.get(name)
    params = family.params_model(width=8)
    model = family.build(params, (1, 28, 28), "compact")
    batch = DatasetOutput(data=torch.rand(6, 1, 28, 28))
    outputs = []
    for epoch in (1, 37):
        torch.manual_seed(0)
        out = model(batch, epoch=epoch, dataset_size=6, uses_ddp=False)
        outputs.append(float(out.loss.detach()))
    assert outputs[0] == outputs[1]


def test_a_rolling_checkpoint_that_cannot_be_written_does_not_stop_the_cell(parquet_repo, tmp_path):
    config = tiny_config(parquet_repo)
    (tmp_path / "not-a-folder").write_text("")
    logs = []
    rolling = RollingCheckpoint(tmp_path / "not-a-folder" / "c.resume.pt", config, 1, logs.append)
    rolling.save(TrainingState(1, {"w": torch.zeros(1)}))
    assert rolling.every == 0 and not rolling.due(1)
    (line,) = logs
    assert line.startswith("    rolling checkpoint not written (") and "training goes on" in line


def test_a_killed_cell_resumes_in_a_jobs_worker(parquet_repo, uninterrupted, tmp_path, capsys):
    """The rolling checkpoint and its setting travel to `--jobs` worker processes too."""
    args = run_args(parquet_repo, tmp_path, "betavae", every=1)
    assert run_and_kill(args, "training", "SIGKILL") == -9
    both = [*args[: args.index("--models") + 1], "betavae,vqvae", *args[args.index("--out") :]]
    capsys.readouterr()
    assert main([*both, "--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "resuming from the rolling checkpoint after epoch 2/3" in printed
    for model in ("betavae", "vqvae"):
        assert_same_record(cell_of(tmp_path, model), cell_of(uninterrupted, model))
    assert Record.read(cell_of(tmp_path, "betavae")).training["resumed_after_epoch"] == 2
    assert not list((tmp_path / "results").rglob("*.resume.pt"))
