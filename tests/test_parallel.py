"""`--jobs N` workers and per-cell claims: same records, each cell trained once, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
from wandb_log import find_runs, read_run

from benchmark.records.cellfiles import CellFiles
from benchmark.records.claims import try_claim
from benchmark.records.results import Record
from benchmark.running import runner
from benchmark.running.executors.workers import thread_note, worker_plan
from benchmark.running.suites import expand_cells, resolve_suite
from benchmark.tracking import wandb_tracker
from conftest import TINY_SETTINGS, child_pids, wait_gone

QUIET = dict(log=lambda message: None)


def _ctrl_c_as_at_a_terminal() -> None:
    """A process started in the background by a shell without job control (as CI may be)
    inherits SIGINT ignored, and Python then keeps ignoring it; at a terminal Ctrl-C works."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_ctrl_c_as_at_a_terminal,
        **kwargs,
    )


def metrics_by_cell(records: list[Record]) -> dict[str, dict]:
    return {f"{r.model}-{r.seed}": r.metrics for r in records}


def test_jobs_2_gives_the_records_of_the_sequential_runner(tiny_suite_args, tmp_path):
    suite = resolve_suite(**tiny_suite_args)
    sequential = runner.run_suite(suite, tmp_path / "seq", **QUIET)
    logs: list[str] = []
    factory = wandb_tracker.make_tracker_factory(
        "offline", "vaebench-tests", None, str(tmp_path / "par"), logs.append
    )
    parallel = runner.run_suite(
        suite, tmp_path / "par", log=logs.append, tracker_factory=factory, jobs=2
    )
    assert [r.model for r in parallel] == [r.model for r in sequential]
    assert all(r.status == "ok" for r in parallel), [r.error for r in parallel]
    for ours, theirs in zip(parallel, sequential, strict=True):
        assert ours.config_hash == theirs.config_hash
        assert ours.training["steps"] == theirs.training["steps"]
        # the same train.threads in both: the very same numbers, however the cell was run
        assert ours.metrics == theirs.metrics
        assert ours.environment.torch_threads == theirs.environment.torch_threads == 2
    for config in expand_cells(suite):  # the record on disk, and no claim left behind
        assert (
            json.loads(CellFiles.of(tmp_path / "par", config).record.read_text())["status"] == "ok"
        )
        assert not CellFiles.of(tmp_path / "par", config).claim.exists()
    # one W&B run per cell, logged from the workers
    runs = {read_run(path).run.display_name for path in find_runs(tmp_path / "par")}
    assert runs == {c.cell_id for c in expand_cells(suite)}
    # progress: every cell's start, epochs and result reach the parent's log
    assert any("running 3 cells in 2 worker processes" in line for line in logs)
    for config in expand_cells(suite):
        assert any(f"{config.cell_id}: training" in line for line in logs)
        assert any(f"{config.cell_id} epoch 1/1" in line for line in logs)
        assert any(f"{config.cell_id}: ok in" in line for line in logs)


def test_workers_share_gpus_round_robin():
    plan = worker_plan(5, ["2", "3"])
    assert [env["CUDA_VISIBLE_DEVICES"] for env in plan] == ["2", "3", "2", "3", "2"]
    assert worker_plan(2, []) == [{}, {}]  # the CPU: threads are each cell's train.threads


def test_the_thread_note_says_when_workers_oversubscribe_the_cores(tiny_suite_args):
    cells = expand_cells(resolve_suite(**tiny_suite_args))  # train.threads: 2 by default
    assert thread_note(cells, workers=2, cores=16) == "2 threads a cell (train.threads)"
    crowded = thread_note(cells, workers=2, cores=2)
    assert "oversubscribed" in crowded and "--set train.threads=1 fits" in crowded


def test_a_cell_claimed_by_another_runner_is_left_to_it(tiny_suite_args, tmp_path):
    suite = resolve_suite(**tiny_suite_args)
    vqvae = expand_cells(suite)[1]
    held = try_claim(CellFiles.of(tmp_path, vqvae))  # another runner is training it
    logs: list[str] = []
    records = runner.run_suite(suite, tmp_path, log=logs.append)
    assert [r.model for r in records] == ["betavae", "vaegan"]
    assert not CellFiles.of(tmp_path, vqvae).record.exists()
    line = next(line for line in logs if vqvae.cell_id in line)
    assert f"being trained by {os.uname().nodename}:{os.getpid()}" in line
    held.release()
    records = runner.run_suite(suite, tmp_path, log=logs.append)  # the owner gave up: ours now
    assert [r.model for r in records] == ["betavae", "vqvae", "vaegan"]


def test_a_claim_dies_with_its_owner(tmp_path):
    record = tmp_path / "results" / "s" / "cell.json"
    code = (
        "import sys, time; from pathlib import Path; "
        "from benchmark.records.claims import try_claim; "
        "from benchmark.records.cellfiles import CellFiles; "
        "c = try_claim(CellFiles(Path(sys.argv[1]))); print('held' if c else 'busy', flush=True); "
        "time.sleep(600)"
    )
    owner = subprocess.Popen([sys.executable, "-c", code, str(record)], stdout=subprocess.PIPE)
    try:
        assert owner.stdout.readline().strip() == b"held"
        assert try_claim(CellFiles(record)) is None
    finally:
        owner.kill()  # SIGKILL: no cleanup runs in the owner
        owner.wait()
    claim = try_claim(CellFiles(record))
    assert (
        claim is not None and json.loads(CellFiles(record).claim.read_text())["pid"] == os.getpid()
    )
    claim.release()
    assert not CellFiles(record).claim.exists()


def test_two_runners_on_one_folder_train_each_cell_once(parquet_repo, tmp_path):
    args = ["--datasets", str(parquet_repo), "--seeds", "0,1", "--wandb", "off"]
    args += ["--out", str(tmp_path)] + [f"--set={s}" for s in TINY_SETTINGS]
    first, second = cli(*args), cli(*args)
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    suite = resolve_suite("quick", TINY_SETTINGS, datasets=[str(parquet_repo)], seeds=[0, 1])
    for config in expand_cells(suite):
        trained = sum(out.count(f"{config.cell_id}: training") for out in outputs)
        assert trained == 1, (config.cell_id, outputs)
        record = json.loads(CellFiles.of(tmp_path, config).record.read_text())
        assert record["status"] == "ok" and record["config_hash"] == config.config_hash()
    assert not list(tmp_path.rglob("*.claim")) and not list(tmp_path.rglob("*.tmp"))


class DiesOnVQVAE:
    """A tracker whose start kills its worker process when the cell is VQVAE's."""

    seconds = 0.0

    def start(self, config, env):
        if config.model == "vqvae":
            os._exit(9)

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def test_a_worker_that_dies_fails_only_its_cell(tiny_suite_args, tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import us
    suite = resolve_suite(**tiny_suite_args)
    logs: list[str] = []
    records = runner.run_suite(
        suite, tmp_path, log=logs.append, tracker_factory=DiesOnVQVAE, jobs=2
    )
    status = {r.model: r.status for r in records}
    assert status == {"betavae": "ok", "vqvae": "failed", "vaegan": "ok"}
    failed = next(r for r in records if r.model == "vqvae")
    assert failed.error == "worker process died (exit code 9)"
    assert not list(tmp_path.rglob("*.claim"))


def test_ctrl_c_stops_the_workers_and_keeps_finished_cells(parquet_repo, tmp_path):
    # one quick cell, then cells long enough to be interrupted mid-training
    args = ["--datasets", str(parquet_repo), "--models", "vqvae,vaegan", "--seeds", "0,1"]
    args += ["--jobs", "2", "--wandb", "off", "--out", str(tmp_path)]
    args += [f"--set={s}" for s in TINY_SETTINGS] + ["--set=train.epochs=60"]
    process = cli(*args)
    lines = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "epoch 2/60" in line:  # both workers are up and training
            break
    children = child_pids(process.pid)
    assert len(children) >= 2, lines
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, "".join(lines) + output
    assert "interrupted" in output
    alive = wait_gone(children)
    assert not alive, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in alive]
    assert not list(tmp_path.rglob("*.claim")) and not list(tmp_path.rglob("*.tmp"))
    for path in tmp_path.rglob("*.json"):  # whatever finished is complete
        assert json.loads(path.read_text())["status"] == "ok"
