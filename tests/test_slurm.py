"""The SLURM path. Without a cluster: how a job's request is sized and checked against the
partition. On a real SLURM (`tools/slurm-local.sh up`; skipped where `sinfo` does not answer):
a tiny suite end to end, and each fault: a request the partition can never give, a cancelled
job (with and without accounting), SIGTERM to vaebench, an unreachable controller."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.config import SlurmConfig
from benchmark.errors import UserInputError
from benchmark.records.results import load_records
from benchmark.running.executors.slurm_cluster import Partition, _gpus, _minutes, job_request
from benchmark.running.suites import resolve_suite
from conftest import TINY_SETTINGS

CPU_NODE = Partition("debug", cpus=2, memory_mb=24_000, gpus=0, time_limit_min=None)
GPU_NODE = Partition("gpu", cpus=16, memory_mb=128_000, gpus=1, time_limit_min=600)


def cells(*overrides: str):
    return resolve_suite("quick", list(overrides)).cells()


def test_a_cpu_cell_asks_for_no_gpu_and_its_own_threads():
    request = job_request(SlurmConfig(), cells("train.device=cpu", "train.threads=2"), CPU_NODE)
    assert request["gpus_per_node"] == 0 and request["cpus_per_task"] == 2
    assert "mem_gb" not in request  # the partition's default


def test_auto_cells_ask_for_a_gpu_only_where_the_partition_has_one():
    assert job_request(SlurmConfig(), cells(), CPU_NODE)["gpus_per_node"] == 0
    assert job_request(SlurmConfig(), cells(), GPU_NODE)["gpus_per_node"] == 1
    assert job_request(SlurmConfig(), cells("train.device=cuda"), GPU_NODE)["gpus_per_node"] == 1


@pytest.mark.parametrize(
    "setting, words",
    [
        ({"cpus_per_job": 4000}, "4000 CPUs (slurm.cpus_per_job)"),
        ({"mem_gb": 4096}, "4096 GB of memory (slurm.mem_gb)"),
        ({"gpus_per_job": 2}, "2 GPUs (slurm.gpus_per_job)"),
        ({"time_min": 601}, "601 minutes (slurm.time_min)"),
    ],
)
def test_a_request_the_partition_can_never_give_is_refused(setting, words):
    with pytest.raises(UserInputError, match="never|at most") as refused:
        job_request(SlurmConfig(**setting), cells(), GPU_NODE)
    assert words in str(refused.value) and "partition 'gpu'" in str(refused.value)


def test_sinfo_fields_are_read():
    assert [_minutes(x) for x in ("infinite", "30:00", "02:00:00", "1-00:00:00", "2-12")] == [
        None,
        30,
        120,
        1440,
        3600,
    ]
    assert [_gpus(x) for x in ("(null)", "gpu:4", "gpu:a100:8(S:0-1)", "gpu:2,shard:8")] == [
        0,
        4,
        8,
        2,
    ]


# ---- on a real SLURM --------------------------------------------------------------------------


def sinfo_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


real_slurm = pytest.mark.skipif(
    not sinfo_answers(), reason="no SLURM controller answers here (tools/slurm-local.sh up)"
)
SETTINGS = [arg for setting in TINY_SETTINGS for arg in ("--set", setting)]


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    done = subprocess.run(
        [
            "sacct",
            "--noheader",
            "--parsable2",
            "--format",
            "JobID,State",
            "-X",
            "-j",
            ",".join(job_ids),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split("|", 1) for line in done.stdout.splitlines())


@real_slurm
@pytest.mark.slurm
def test_a_tiny_suite_through_real_slurm_gives_the_local_records(parquet_repo, tmp_path, capsys):
    common = ["--datasets", str(parquet_repo), "--models", "betavae,vqvae", "--wandb", "off"]
    common += [*SETTINGS, "--set", "train.device=cpu"]
    assert main(["run", *common, "--out", str(tmp_path / "local")]) == 0
    assert main(["run", *common, "--out", str(tmp_path / "slurm"), "--executor", "slurm"]) == 0
    printed = capsys.readouterr().out
    (submitted,) = [line for line in printed.splitlines() if line.startswith("submitted ")]
    job_ids = submitted.split(": ", 1)[1].split(", ")
    assert set(sacct_states(job_ids).values()) == {"COMPLETED"}
    local = {r.model: r for r in load_records(tmp_path / "local")}
    for record in load_records(tmp_path / "slurm"):
        same = local[record.model]
        assert record.status == "ok" and record.config_hash == same.config_hash
        # the same machine, threads and seed: the same numbers
        for key, value in same.metrics.items():
            assert record.metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@real_slurm
@pytest.mark.slurm
def test_a_request_the_real_partition_cannot_give_is_one_line_before_submitting(
    parquet_repo, tmp_path, capsys
):
    code = main(
        ["run", "--datasets", str(parquet_repo), "--models", "betavae", "--wandb", "off"]
        + [*SETTINGS, "--out", str(tmp_path), "--executor", "slurm"]
        + ["--set", "slurm.cpus_per_job=4000"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "slurm.cpus_per_job" in err
    assert not (tmp_path / "slurm").exists() or not list((tmp_path / "slurm").iterdir())


# ---- faults on a real SLURM ---------------------------------------------------------------------


def start_run(out, *more: str, env=None) -> subprocess.Popen:
    """`vaebench run --executor slurm` of one long betavae cell, in its own process."""
    args = ["--datasets", str(out.parent / "data"), "--models", "betavae", "--wandb", "off"]
    # one CPU: the job fits beside another one-CPU job on a two-CPU node
    args += [*SETTINGS, "--set", "train.device=cpu", "--set", "train.epochs=5000"]
    args += ["--set", "train.threads=1"]
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark", "run", *args, "--out", str(out), "--executor", "slurm"]
        + list(more),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        # Ctrl-C reaches it as at a terminal, even when the tests run in the background
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def submitted_job(process: subprocess.Popen, seen: list[str]) -> str:
    for line in process.stdout:
        seen.append(line)
        if line.startswith("submitted "):
            return line.split(": ", 1)[1].strip()
    raise AssertionError("no job was submitted: " + "".join(seen))


def wait_until_running(job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "--noheader", "--format=%T", f"--jobs={job_id}"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if state == "RUNNING":
            time.sleep(3)  # into training
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not start running")


@pytest.fixture
def data_beside(parquet_repo, tmp_path):
    (tmp_path / "data").symlink_to(parquet_repo)
    return tmp_path / "out"


@real_slurm
@pytest.mark.slurm
@pytest.mark.parametrize("accounting", [True, False])
def test_a_cancelled_job_fails_its_cell_in_one_line_and_a_rerun_trains_it(
    data_beside, tmp_path, accounting
):
    env = dict(os.environ)
    if not accounting:  # a cluster without slurmdbd: sacct knows no job
        shims = tmp_path / "shims"
        shims.mkdir()
        (shims / "sacct").write_text(
            "#!/bin/sh\necho 'sacct: error: accounting disabled' >&2\nexit 1\n"
        )
        (shims / "sacct").chmod(0o755)
        env["PATH"] = f"{shims}:{env['PATH']}"
    seen: list[str] = []
    process = start_run(data_beside, env=env)
    job_id = submitted_job(process, seen)
    wait_until_running(job_id)
    cancelled_at = time.monotonic()
    subprocess.run(["scancel", job_id], check=True)
    output = "".join(seen) + process.communicate(timeout=120)[0]
    took = time.monotonic() - cancelled_at
    assert process.returncode == 1, output
    (line,) = [x for x in output.splitlines() if "FAILED:" in x]
    ended = f"job {job_id} ended CANCELLED" if accounting else f"job {job_id} left the queue"
    assert ended in line and "Traceback" not in output
    assert took < 60, took
    # the rerun trains it (resuming from its rolling checkpoint): a short cell this time
    (record,) = load_records(data_beside)
    assert record.status == "failed"
    rerun = start_run(data_beside, "--set", "train.epochs=2", env=env)
    output = rerun.communicate(timeout=180)[0]
    assert rerun.returncode == 0, output
    assert load_records(data_beside)[0].status == "ok"


@real_slurm
@pytest.mark.slurm
@pytest.mark.parametrize("stop, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_ctrl_c_cancels_this_runs_jobs_and_only_them(data_beside, stop, code):
    other = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--cpus-per-task=1",
            "--wrap",
            "sleep 120",
            "--output",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        seen: list[str] = []
        process = start_run(data_beside)
        job_id = submitted_job(process, seen)
        wait_until_running(job_id)
        process.send_signal(stop)
        output = "".join(seen) + process.communicate(timeout=60)[0]
        assert process.returncode == code, output
        assert f"cancelled this run's SLURM jobs still queued or running: {job_id}" in output
        # a cancelled job is COMPLETING for a moment (its processes being killed), then gone
        deadline = time.monotonic() + 15
        while job_id in (queue := _queue()) and time.monotonic() < deadline:
            assert queue[job_id] == "COMPLETING", queue
            time.sleep(0.2)
        assert job_id not in queue and queue.get(other) in ("RUNNING", "PENDING"), queue
    finally:
        subprocess.run(["scancel", other])


def _queue() -> dict[str, str]:
    """Job id -> state of every job in the queue."""
    listing = subprocess.run(
        ["squeue", "--noheader", "--format=%i %T"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split() for line in listing.splitlines() if line.strip())


@real_slurm
@pytest.mark.slurm
def test_an_unreachable_controller_is_one_line_before_any_training(
    parquet_repo, tmp_path, monkeypatch, capsys
):
    conf = tmp_path / "slurm.conf"
    text = Path("/etc/slurm/slurm.conf").read_text()
    conf.write_text(text + "\nSlurmctldPort=1\n")  # nobody listens there
    monkeypatch.setenv("SLURM_CONF", str(conf))
    code = main(
        ["run", "--datasets", str(parquet_repo), "--models", "betavae", "--wandb", "off"]
        + [*SETTINGS, "--out", str(tmp_path / "out"), "--executor", "slurm"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "cannot reach the SLURM controller" in err or "did not answer" in err
    assert not (tmp_path / "out" / "results").exists()


def squeue_state(job_id: str) -> str:
    return subprocess.run(
        ["squeue", "--noheader", "--format=%T", f"--jobs={job_id}"], capture_output=True, text=True
    ).stdout.strip()


@real_slurm
@pytest.mark.slurm
def test_a_requeued_job_continues_its_cell_from_the_rolling_checkpoint(data_beside):
    seen: list[str] = []
    process = start_run(data_beside, "--set", "train.epochs=600", "--checkpoint-every", "20")
    job_id = submitted_job(process, seen)
    wait_until_running(job_id)
    deadline = time.monotonic() + 60
    while not list(data_beside.rglob("*.resume.pt")):  # a rolling checkpoint to continue from
        assert time.monotonic() < deadline, "no rolling checkpoint was written"
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    deadline = time.monotonic() + 60
    while squeue_state(job_id) != "PENDING":  # killed (KillWait), then held back
        assert time.monotonic() < deadline, f"job {job_id} was not requeued"
        time.sleep(0.5)
    # SLURM holds a requeued job about two minutes (its begin time); let it start now
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)
    output = "".join(seen) + process.communicate(timeout=240)[0]
    assert process.returncode == 0, output
    (record,) = load_records(data_beside)
    assert record.status == "ok" and 0 < record.training["resumed_after_epoch"] < 600
    assert sacct_states([job_id]) == {job_id: "COMPLETED"}
    job_log = next(data_beside.glob(f"slurm/{job_id}/*_log.out")).read_text()
    assert "resuming from the rolling checkpoint after epoch" in job_log


@real_slurm
@pytest.mark.slurm
def test_a_job_pending_for_a_reason_that_never_clears_is_one_line_and_cancelled(
    parquet_repo, tmp_path, monkeypatch, capsys
):
    """A cluster whose sinfo overstates its nodes: the pre-check passes, SLURM holds the job
    (PartitionConfig), vaebench says so and cancels it instead of waiting forever."""
    import benchmark.running.executors.slurm_cluster

    monkeypatch.setattr(
        benchmark.running.executors.slurm_cluster,
        "read_partition",
        lambda name: Partition("debug", 4096, 10**7, 0, None),
    )
    started = time.monotonic()
    code = main(
        ["run", "--datasets", str(parquet_repo), "--models", "betavae", "--wandb", "off"]
        + [*SETTINGS, "--out", str(tmp_path), "--executor", "slurm"]
        + ["--set", "train.device=cpu", "--set", "slurm.cpus_per_job=64"]
    )
    captured = capsys.readouterr()
    (job_id,) = captured.out.split("submitted 1 jobs: ")[1].split()
    assert code == 2 and captured.err.count("\n") == 1, captured.err
    assert f"job {job_id} can never start (PartitionConfig)" in captured.err
    assert f"cancelled this run's SLURM jobs still queued or running: {job_id}" in captured.err
    assert time.monotonic() - started < 30
    assert squeue_state(job_id) == ""
    assert not list((tmp_path / "results").rglob("*.json"))  # nothing ran: nothing to record


def sacct_times(job_ids: list[str]) -> list[tuple[str, str]]:
    done = subprocess.run(
        ["sacct", "--noheader", "--parsable2", "-X", "--format=Start,End", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(tuple(line.split("|")) for line in done.stdout.splitlines())


@real_slurm
@pytest.mark.slurm
def test_max_parallel_throttles_the_job_array(parquet_repo, tmp_path, capsys):
    """Two one-CPU cells fit the two-CPU node at once; `slurm.max_parallel=1` runs them one
    after the other."""
    code = main(
        ["run", "--datasets", str(parquet_repo), "--models", "betavae,vqvae", "--wandb", "off"]
        + [*SETTINGS, "--out", str(tmp_path), "--executor", "slurm"]
        + ["--set", "train.device=cpu", "--set", "train.threads=1"]
        + ["--set", "slurm.max_parallel=1"]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    job_ids = printed.split("submitted 2 jobs: ")[1].splitlines()[0].split(", ")
    assert {job_id.split("_")[0] for job_id in job_ids} == {job_ids[0].split("_")[0]}  # one array
    (_, first_end), (second_start, _) = sacct_times(job_ids)
    assert second_start >= first_end


@real_slurm
@pytest.mark.slurm
def test_a_sweep_runs_each_trial_as_a_job(parquet_repo, tmp_path):
    fixed = [*TINY_SETTINGS, "train.device=cpu", "train.threads=1"]
    sweep = {
        "method": "grid",
        "metric": {"name": "recon/mse", "goal": "minimize"},
        "parameters": {
            "betavae.beta": {"values": [0.5, 2.0]},
            "models": {"value": "betavae"},
            "datasets": {"value": str(parquet_repo)},
            **{s.split("=")[0]: {"value": yaml.safe_load(s.split("=")[1])} for s in fixed},
        },
        "command": ["${env}", "${interpreter}", "-m", "benchmark", "run", "--wandb", "off"]
        + ["${args}"],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "benchmark", "sweep", str(path), "--count", "2"]
        + ["--out", str(out), "--executor", "slurm", "--parallel", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    started = [line for line in lines if " started (job " in line]
    assert len(started) == 2
    # both trials were submitted before either ended: two at once
    assert lines.index(started[1]) < min(i for i, x in enumerate(lines) if " exited " in x)
    job_ids = [line.split("(job ")[1].split(";")[0] for line in started]
    assert set(sacct_states(job_ids).values()) == {"COMPLETED"}
    summary = json.loads((out / "sweep.json").read_text())
    assert [t["params"]["betavae.beta"] for t in summary["trials"]] == [0.5, 2.0]
    for trial in summary["trials"]:
        (record,) = load_records(Path(trial["out"]) / "results")
        assert (
            record.status == "ok"
            and record.config.params["beta"] == trial["params"]["betavae.beta"]
        )
        assert trial["exit_code"] == 0 and trial["value"] == pytest.approx(
            record.metrics["recon/mse"]
        )


@real_slurm
@pytest.mark.slurm
def test_the_agents_job_array_starts_one_agent_per_task(tmp_path):
    """sweeps/slurm-agents.sbatch as a user submits it, sized down to this CPU node, with a
    stand-in `wandb` that says how it was called (no W&B server here)."""
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "wandb").write_text('#!/bin/sh\necho "wandb $* task $SLURM_ARRAY_TASK_ID"\n')
    (shims / "wandb").chmod(0o755)
    script = Path(__file__).resolve().parents[1] / "sweeps" / "slurm-agents.sbatch"
    job_id = subprocess.run(
        ["sbatch", "--parsable", "--wait", "--array=0-1", "--gpus-per-node=0"]
        + ["--cpus-per-task=1", "--mem=1G", f"--output={tmp_path}/%A_%a.out"]
        + [f"--export=ALL,PATH={shims}:{os.environ['PATH']},SWEEP_ID=team/vaebench/abc123"]
        + [str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert job_id.returncode == 0, job_id.stderr
    array = job_id.stdout.strip()
    outputs = sorted(tmp_path.glob(f"{array}_*.out"))
    assert [p.read_text().strip() for p in outputs] == [
        "wandb agent team/vaebench/abc123 task 0",
        "wandb agent team/vaebench/abc123 task 1",
    ]
