"""W&B tracking, checked against what the offline run really logged (its .wandb log)."""

from __future__ import annotations

import pytest
import wandb
from wandb_log import find_runs, read_run

from benchmark.models import FAMILIES
from benchmark.records.cellfiles import CellFiles
from benchmark.running import runner
from benchmark.running.suites import expand_cells, resolve_suite
from benchmark.tracking import wandb_records, wandb_tracker
from benchmark.tracking.base import NullTracker
from conftest import make_record


@pytest.fixture(scope="module")
def tracked_run(tiny_suite_args, tmp_path_factory):
    out = tmp_path_factory.mktemp("tracked")
    suite = resolve_suite(**tiny_suite_args)
    logs: list[str] = []
    factory = wandb_tracker.make_tracker_factory(
        "offline", "vaebench-tests", None, str(out), logs.append
    )
    records = runner.run_suite(suite, out, log=logs.append, tracker_factory=factory)
    runs = {read_run(path).run.display_name: read_run(path) for path in find_runs(out)}
    return suite, records, runs, logs


def test_one_offline_run_per_cell_named_grouped_and_tagged(tracked_run):
    suite, records, runs, _ = tracked_run
    cells = expand_cells(suite)
    assert set(runs) == {c.cell_id for c in cells}
    for cell in cells:
        run = runs[cell.cell_id]
        assert run.run.run_group == f"quick/{cell.dataset}"
        assert run.run.job_type == "benchmark"
        assert set(run.run.tags) == {"quick", cell.model, cell.dataset}
        assert run.config["train.epochs"] == 1 and run.config["model"] == cell.model
        assert run.config[f"{cell.model}.width"] == 8  # family params under the family's name
        assert run.config["config_hash"] == cell.config_hash()
        assert run.config["env.pythae"] == "0.1.2" and "env.git_sha" in run.config


def test_the_streamed_summary_equals_the_local_record(tracked_run):
    _, records, runs, _ = tracked_run
    for record in records:
        run = next(run for name, run in runs.items() if name.endswith(f"-{record.model}-seed0"))
        for key, value in record.metrics.items():
            assert run.summary[key] == pytest.approx(value, rel=1e-12), key
        assert run.summary["status"] == "ok"
        for key, reason in record.unavailable.items():
            assert run.summary[f"unavailable/{key}"] == reason


def test_per_step_history_has_the_familys_components(tracked_run):
    _, records, runs, _ = tracked_run
    for name, run in runs.items():
        family = FAMILIES.get(name.rsplit("-", 2)[-2])
        steps = [h for h in run.history if "trainer/step" in h]
        record = next(r for r in records if name.endswith(f"{r.model}-seed0"))
        assert len(steps) == record.training["steps"]
        for component in family.train_components:
            assert f"train/{component}" in steps[0], component
        assert any(key.startswith("lr/") for key in steps[0])
        assert steps[0]["perf/images_per_s"] > 0
        assert any("val/loss" in h and "trainer/epoch" in h for h in run.history)
        assert any("images/reconstructions/path" in h for h in run.history)


def test_metric_directions_are_declared(tracked_run):
    run = next(iter(tracked_run[2].values()))
    assert run.metrics["recon/ssim"].summary.max and run.metrics["recon/gmsd"].summary.min
    assert run.metrics["train/*"].step_metric == "trainer/step"
    assert run.metrics["val/*"].step_metric == "trainer/epoch"


def test_not_logged_in_means_offline_with_one_notice(monkeypatch, tmp_path):
    for variable in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_SWEEP_ID"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    mode, notice = wandb_tracker.resolve_mode("auto")
    assert mode == "offline" and "wandb sync" in notice
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(wandb_tracker, "server_reachable", lambda timeout=None: (True, ""))
    assert wandb_tracker.resolve_mode("auto") == ("online", None)
    assert wandb_tracker.resolve_mode("off") == ("off", None)


def test_a_failing_wandb_never_fails_the_cell(tiny_suite_args, tmp_path, monkeypatch):
    def broken_init(*args, **kwargs):
        raise RuntimeError("W&B is down")

    monkeypatch.setattr(wandb, "init", broken_init)
    logs: list[str] = []
    factory = wandb_tracker.make_tracker_factory("online", "p", None, str(tmp_path), logs.append)
    args = dict(tiny_suite_args, models=["vqvae"])
    records = runner.run_suite(
        resolve_suite(**args), tmp_path, log=logs.append, tracker_factory=factory
    )
    assert records[0].status == "ok"
    assert list((tmp_path / "results").rglob("*.json"))
    assert any("W&B: init failed (RuntimeError: W&B is down)" in line for line in logs)


def test_a_failing_wandb_log_never_fails_the_cell(tiny_suite_args, tmp_path, monkeypatch):
    real_init = wandb.init

    def init_with_broken_log(*args, **kwargs):
        run = real_init(*args, **kwargs)

        def broken_log(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(run, "log", broken_log)
        return run

    monkeypatch.setattr(wandb, "init", init_with_broken_log)
    logs: list[str] = []
    factory = wandb_tracker.make_tracker_factory("offline", "p", None, str(tmp_path), logs.append)
    records = runner.run_suite(
        resolve_suite(**dict(tiny_suite_args, models=["betavae"])),
        tmp_path,
        log=logs.append,
        tracker_factory=factory,
    )
    assert records[0].status == "ok"
    assert sum("W&B: log failed (OSError: disk full)" in line for line in logs) == 1


def test_streaming_every_nth_step(tiny_suite_args, tmp_path):
    logs: list[str] = []
    factory = wandb_tracker.make_tracker_factory(
        "offline", "p", None, str(tmp_path), logs.append, log_every=2
    )
    records = runner.run_suite(
        resolve_suite(**dict(tiny_suite_args, models=["vqvae"])),
        tmp_path,
        log=logs.append,
        tracker_factory=factory,
    )
    assert not [line for line in logs if line.startswith("W&B:")], logs
    run = read_run(find_runs(tmp_path)[0])
    steps = [h["trainer/step"] for h in run.history if "train/loss" in h]
    assert steps == list(range(2, records[0].training["steps"] + 1, 2)), logs


class SentRows:
    """Stands in for a wandb Run's `log`: keeps what was sent, in order."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log(self, row: dict) -> None:
        self.rows.append(row)


def test_step_rows_are_sent_in_order_at_the_epoch_end():
    tracker = wandb_tracker.WandbTracker("offline", flush_seconds=3600)
    tracker.run = SentRows()
    for step in (1, 2, 3):
        tracker.log_step({"train/loss": float(step), "trainer/step": step})
    assert tracker.run.rows == []  # nothing crosses to wandb between training steps
    tracker.log_epoch({"epoch": 1.0, "val/loss": 0.5, "train/loss": 2.0})
    assert [row.get("trainer/step") for row in tracker.run.rows] == [1, 2, 3, None]
    assert tracker.run.rows[-1] == {"val/loss": 0.5, "trainer/epoch": 1.0}


def test_a_long_epoch_still_streams_once_rows_are_flush_seconds_old():
    tracker = wandb_tracker.WandbTracker("offline", flush_seconds=0.0)
    tracker.run = SentRows()
    tracker.log_step({"train/loss": 1.0, "trainer/step": 1})
    assert tracker.run.rows == [{"train/loss": 1.0, "trainer/step": 1}]


def test_a_cell_that_fails_mid_epoch_still_sends_its_steps(tiny_suite_args, tmp_path):
    class FailsAtStepTwo(wandb_tracker.WandbTracker):
        def log_step(self, values):
            super().log_step(values)
            if values["trainer/step"] == 2:
                raise RuntimeError("boom")

    records = runner.run_suite(
        resolve_suite(**dict(tiny_suite_args, models=["betavae"])),
        tmp_path,
        log=lambda m: None,
        tracker_factory=lambda: FailsAtStepTwo("offline", "p", None, str(tmp_path)),
    )
    assert records[0].status == "failed" and "boom" in records[0].error
    run = read_run(find_runs(tmp_path)[0])
    assert [h["trainer/step"] for h in run.history if "train/loss" in h] == [1, 2]
    assert run.summary["status"] == "failed"


def test_a_key_without_a_reachable_server_goes_offline_after_one_short_check(monkeypatch):
    """wandb.init would wait about a minute per cell for an unreachable server."""
    import threading
    import time

    calls, release = [], threading.Event()

    def hanging_connection(address, timeout=None):
        calls.append(address)
        release.wait(30)  # a server that never answers, until the test is over
        raise TimeoutError("timed out")

    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wandb_tracker, "SERVER_CHECK_S", 0.5)
    monkeypatch.setattr(wandb_tracker.socket, "create_connection", hanging_connection)
    notices: list[str] = []
    started = time.perf_counter()
    factory = wandb_tracker.make_tracker_factory("auto", "p", None, None, notices.append)
    assert time.perf_counter() - started < 2.0
    assert calls == [("wandb.example.org", 443)]  # one check for the whole suite
    release.set()
    assert factory().mode == "offline"
    assert notices == [
        "W&B: logged in, but the server cannot be reached (wandb.example.org: no answer within "
        "0.5 s); runs are logged offline (upload them later with `wandb sync`)"
    ]


def test_tracking_time_is_kept_out_of_training_and_evaluation(tiny_suite_args, tmp_path):
    import time

    class SlowTracker(NullTracker):
        def __init__(self):
            self.seconds = 0.0

        def log_epoch(self, summary):
            time.sleep(0.5)  # as a slow W&B call inside the training loop would
            self.seconds += 0.5

    suite = resolve_suite(**dict(tiny_suite_args, models=["betavae"]))
    fast = runner.run_suite(suite, tmp_path / "fast", log=lambda m: None)[0].timings
    slow = runner.run_suite(
        suite, tmp_path / "slow", log=lambda m: None, tracker_factory=SlowTracker
    )[0].timings
    assert slow["tracking"] == 0.5 and fast["tracking"] == 0.0
    assert slow["train"] < fast["train"] + 0.4  # the 0.5 s is not training
    assert slow["total"] >= fast["total"] + 0.4 - 0.3


def test_no_model_artifact_unless_asked(tracked_run):
    _, _, runs, _ = tracked_run
    assert not [a for run in runs.values() for a in run.artifacts if a.type == "model"]


def test_wandb_artifacts_log_the_final_checkpoint_as_a_model_artifact(tiny_suite_args, tmp_path):
    import base64
    import hashlib
    import json

    suite = resolve_suite(**dict(tiny_suite_args, models=["vqvae"]))
    factory = wandb_tracker.make_tracker_factory(
        "offline", "vaebench-tests", None, str(tmp_path), lambda m: None, artifacts=True
    )
    (record,) = runner.run_suite(suite, tmp_path, log=lambda m: None, tracker_factory=factory)
    (config,) = suite.cells()
    (path,) = find_runs(tmp_path)
    (artifact,) = [a for a in read_run(path).artifacts if a.type == "model"]
    assert artifact.type == "model"
    assert artifact.name == f"model-{config.cell_id}"
    assert {"latest", config.cell_id, f"config-{config.config_hash()}"} <= set(artifact.aliases)
    metadata = json.loads(artifact.metadata)
    assert metadata["config_hash"] == record.config_hash
    assert metadata["metrics"] == pytest.approx(record.metrics, rel=1e-12)
    assert metadata["model"] == "vqvae" and metadata["code"].startswith("0.1.0+")
    (entry,) = artifact.manifest.contents
    checkpoint = CellFiles.of(tmp_path, config).checkpoint
    assert entry.path == f"{config.cell_id}.safetensors"
    assert entry.size == checkpoint.stat().st_size
    md5 = base64.b64encode(hashlib.md5(checkpoint.read_bytes()).digest()).decode()
    assert entry.digest == md5  # W&B's content digest: the very file beside the record


def test_superseded_artifact_versions_are_pruned_online(monkeypatch):
    """Online, the versions no alias points to any more (earlier trainings of the cell) are
    deleted through W&B's public API; the new one, holding the aliases, stays."""
    deleted = []

    class Version:
        def __init__(self, name, aliases):
            self.name, self.aliases = name, aliases

        def delete(self):
            deleted.append(self.name)

    class Api:
        def artifacts(self, type_name, name):
            assert (type_name, name) == ("model", "me/proj/model-mnist-vqvae-seed0")
            return [
                Version("v0", []),
                Version("v1", []),
                Version("v2", ["latest", "mnist-vqvae-seed0"]),
            ]

    monkeypatch.setattr(wandb, "Api", Api)
    run = type("Run", (), {"entity": "me", "project": "proj"})()
    logs = []
    assert wandb_records.prune_superseded(run, "model-mnist-vqvae-seed0", logs.append) == 2
    assert deleted == ["v0", "v1"]
    assert logs == ["W&B: deleted 2 superseded version(s) of model-mnist-vqvae-seed0"]


def test_the_record_names_its_wandb_run(tracked_run):
    _, records, runs, _ = tracked_run
    for record in records:
        where = record.tracker_run
        run = runs[record_cell(record)]
        assert where["tracker"] == "wandb" and where["mode"] == "offline"
        assert where["path"].endswith("/" + run.run.run_id)


def record_cell(record) -> str:

    return record.config.cell_id


class StandInApi:
    """wandb.Api as far as `update_run` uses it, recording what it was asked to write."""

    written: dict = {}

    def run(self, path):
        api = self

        class Summary(dict):
            def update(self, values=None):
                api.written.setdefault(path, {}).update(values or {})

        class Run:
            config: dict = {}
            summary = Summary()

            def update(self):
                api.written.setdefault(path + ":config", {}).update(self.config)

        return Run()


def test_a_rescored_record_updates_its_online_runs_summary_and_config(monkeypatch):
    monkeypatch.setattr(wandb, "Api", StandInApi)
    StandInApi.written = {}
    record = make_record(
        resolve_suite("quick").cells()[0],
        metrics={"recon/mse": 1.5},
        unavailable={"gen/fid": "no weights"},
        sampler={"name": "gmm"},
        tracker_run={"tracker": "wandb", "path": "me/proj/abc123", "mode": "online"},
    )
    logs = []
    assert wandb_records.update_run(record, logs.append)
    assert StandInApi.written["me/proj/abc123"] == {
        "recon/mse": 1.5,
        "unavailable/gen/fid": "no weights",
        "sampler": {"name": "gmm"},
    }
    assert StandInApi.written["me/proj/abc123:config"]["eval.sampler"] == "normal"
    # offline runs are left as their log has them; W&B off: nothing to update
    offline = {"tracker": "wandb", "path": "me/proj/x", "mode": "offline"}
    another = {"tracker": "mlflow", "path": "me/proj/abc123", "mode": "online"}
    for where in (offline, another, None):
        assert not wandb_records.update_run(
            record.model_copy(update={"tracker_run": where}), logs.append
        )
    assert logs == []


def test_a_wandb_failure_while_updating_a_run_is_one_line(monkeypatch):
    class Broken:
        def run(self, path):
            raise ConnectionError("no route to api.wandb.ai")

    monkeypatch.setattr(wandb, "Api", Broken)
    logs = []
    record = make_record(
        resolve_suite("quick").cells()[0],
        tracker_run={"tracker": "wandb", "path": "me/proj/abc", "mode": "online"},
    )
    assert not wandb_records.update_run(record, logs.append)
    assert logs == ["W&B: run me/proj/abc not updated (ConnectionError: no route to api.wandb.ai)"]


def test_a_version_1_record_is_read_with_its_wandb_run_as_the_tracker_run(tmp_path):
    """Schema 2 names a record's run tracker-neutrally; a version-1 record (`wandb_run`) is
    migrated when read, and a version-1 record of tracking off gets no run."""
    import json

    from benchmark.records.results import SCHEMA_VERSION, Record

    cell = resolve_suite("quick").cells()[0]
    current = make_record(cell, metrics={"recon/mse": 1.0})
    assert current.schema_version == SCHEMA_VERSION == 2
    version_1 = {k: v for k, v in current.as_dict().items() if k != "tracker_run"}
    version_1.update(schema_version=1, wandb_run={"path": "me/proj/abc", "mode": "online"})
    path = tmp_path / "old.json"
    path.write_text(json.dumps(version_1))
    record = Record.read(path)
    assert record.schema_version == 2
    assert record.tracker_run == {"tracker": "wandb", "path": "me/proj/abc", "mode": "online"}
    assert record.metrics == {"recon/mse": 1.0}
    version_1["wandb_run"] = None
    assert Record.parse(version_1).tracker_run is None


def test_a_run_with_wandb_off_never_imports_wandb(parquet_repo, tmp_path):
    """`--wandb off` (and `--tracker off`) track nothing, so nothing imports wandb, pre-flight
    included (its import is most of a second on this machine)."""
    import json
    import subprocess
    import sys

    from conftest import TINY_SETTINGS

    sets = [arg for setting in TINY_SETTINGS for arg in ("--set", setting)]
    args = ["run", "--datasets", str(parquet_repo), "--models", "betavae", "--wandb", "off"]
    args += ["--out", str(tmp_path), *sets]
    code = (
        "import sys; from benchmark.cli import main; code = main(sys.argv[1:]); "
        "print('WANDB', 'wandb' in sys.modules); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WANDB False" in done.stdout, done.stdout[-2000:]
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*seed0.json")]
    assert record["status"] == "ok" and record["tracker_run"] is None
