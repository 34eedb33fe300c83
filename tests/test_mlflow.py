"""`--tracker mlflow` against a real MLflow tracking server that these tests start on 127.0.0.1
(sqlite backend, artifacts served by the server) and stop, and against the local sqlite store a
run keeps in --out when no server is given. Read back through MLflow's own client."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from benchmark.cli import main
from benchmark.records.results import load_records
from conftest import TINY_SETTINGS

SETTINGS = [arg for setting in TINY_SETTINGS for arg in ("--set", setting)]
SERVER_START_S = 90  # about 11 s on a quiet 2-core machine


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free loopback port; its URI. Stopped (and its folder removed) after
    the module's tests."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
        + ["--artifacts-destination", str(folder / "artifacts")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()}")
        time.sleep(0.3)
    yield uri
    os.killpg(server.pid, 15)
    server.wait(timeout=30)
    log.close()


@pytest.fixture(autouse=True)
def _no_mlflow_environment(monkeypatch):
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(variable, raising=False)


def _run(parquet_repo, out: Path, *more: str) -> int:
    return main(
        ["run", "--datasets", str(parquet_repo), "--out", str(out), "--tracker", "mlflow"]
        + [*SETTINGS, *more]
    )


@pytest.fixture(scope="module")
def served_run(mlflow_server, parquet_repo, tmp_path_factory):
    out = tmp_path_factory.mktemp("served")
    code = _run(
        parquet_repo, out, "--models", "betavae,vqvae", "--mlflow-uri", mlflow_server,
        "--mlflow-experiment", "vaebench-tests",
    )  # fmt: skip
    assert code == 0
    return out, MlflowClient(tracking_uri=mlflow_server)


def test_one_server_run_per_cell_with_params_tags_steps_and_summary(served_run, mlflow_server):
    out, client = served_run
    records = load_records(out)
    assert {r.model for r in records} == {"betavae", "vqvae"}
    experiment = client.get_experiment_by_name("vaebench-tests")
    for record in records:
        where = record.tracker_run
        assert where["tracker"] == "mlflow" and where["mode"] == "server"
        assert where["uri"] == mlflow_server and where["experiment"] == experiment.experiment_id
        run = client.get_run(where["path"])
        assert run.info.status == "FINISHED"
        assert run.info.run_name.endswith(f"-{record.model}-seed0")
        assert run.data.tags["model"] == record.model and run.data.tags["status"] == "ok"
        assert run.data.tags["config_hash"] == record.config_hash
        params = run.data.params
        assert params["train.epochs"] == "1" and params[f"{record.model}.width"] == "8"
        assert params["env.pythae"] == "0.1.2" and params["model"] == record.model
        for key, value in record.metrics.items():  # the summary is the record, to the bit
            assert run.data.metrics[key] == value, key
        for key, reason in record.unavailable.items():
            assert run.data.tags[f"unavailable/{key}"] == reason[:5000]
        steps = client.get_metric_history(where["path"], "train/loss")
        assert [m.step for m in steps] == list(range(1, record.training["steps"] + 1))
        assert client.get_metric_history(where["path"], "val/loss")[0].step == 1


def test_images_and_checkpoint_are_artifacts(served_run, tmp_path):
    out, client = served_run
    for record in load_records(out):
        run_id = record.tracker_run["path"]
        assert {a.path for a in client.list_artifacts(run_id)} == {"images", "checkpoint"}
        images = {a.path for a in client.list_artifacts(run_id, "images")}
        assert images == {"images/reconstructions.png", "images/samples.png"}
        (checkpoint,) = client.list_artifacts(run_id, "checkpoint")
        name = Path(checkpoint.path).name
        assert name.endswith(f"-{record.model}-seed0.safetensors")
        copy = client.download_artifacts(run_id, checkpoint.path, str(tmp_path))
        kept = next((out / "results").rglob(name))
        # the cell's own weights (its metadata's config may since have been re-scored)
        uploaded, ours = load_file(copy), load_file(kept)
        assert uploaded.keys() == ours.keys()
        assert all(torch.equal(uploaded[key], ours[key]) for key in ours)


def test_rescoring_updates_the_server_run(served_run, capsys):
    """`vaebench evaluate --sampler gmm` changes BetaVAE's eval.sampler and its gen/ numbers:
    the run's latest metrics become the new record's, the setting MLflow cannot change as a
    param is a `config.` tag, and the config hash tag follows."""
    out, client = served_run
    (before,) = [r for r in load_records(out) if r.model == "betavae"]
    assert main(["evaluate", str(out), "--sampler", "betavae=gmm"]) == 0
    (after,) = [r for r in load_records(out) if r.model == "betavae"]
    assert after.sampler["name"] == "gmm" and after.metrics["gen/mse"] != before.metrics["gen/mse"]
    run = client.get_run(after.tracker_run["path"])
    for key, value in after.metrics.items():
        assert run.data.metrics[key] == value, key
    assert run.data.params["eval.sampler"] == "normal"  # write-once: the training-time value
    assert run.data.tags["config.eval.sampler"] == "gmm"
    assert run.data.tags["config_hash"] == after.config_hash != before.config_hash
    assert "not updated" not in capsys.readouterr().out


def test_a_local_sqlite_store_when_no_server_is_given(parquet_repo, tmp_path):
    assert _run(parquet_repo, tmp_path, "--models", "betavae") == 0
    (record,) = load_records(tmp_path)
    assert record.tracker_run["mode"] == "local"
    assert record.tracker_run["uri"] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=record.tracker_run["uri"])
    run = client.get_run(record.tracker_run["path"])
    assert run.info.status == "FINISHED" and run.data.metrics["recon/ssim"] == pytest.approx(
        record.metrics["recon/ssim"], abs=0
    )
    # the artifacts live beside the store, inside --out
    assert list((tmp_path / "mlartifacts").rglob("reconstructions.png"))
    assert list((tmp_path / "mlartifacts").rglob("*.safetensors"))


def test_an_unreachable_server_is_one_line_before_any_work(parquet_repo, tmp_path, capsys):
    port = _free_port()  # nothing listens there
    code = _run(
        parquet_repo, tmp_path, "--models", "betavae", "--mlflow-uri", f"http://127.0.0.1:{port}"
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"the MLflow tracking server http://127.0.0.1:{port} cannot be reached" in err
    assert not (tmp_path / "results").exists()


def test_a_failing_mlflow_never_fails_the_cell(parquet_repo, tmp_path, monkeypatch, capsys):
    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(MlflowClient, "log_batch", broken)
    assert _run(parquet_repo, tmp_path, "--models", "vqvae") == 0
    (record,) = load_records(tmp_path)
    assert record.status == "ok" and record.tracker_run is None  # tracking stopped, said once
    out = capsys.readouterr().out
    assert out.count("MLflow: start failed (OSError: disk full)") == 1


def test_an_empty_experiment_name_is_one_line_before_any_work(parquet_repo, tmp_path, capsys):
    """`--mlflow-experiment "$UNSET"`: refused, not replaced by the default in silence; under
    --dry-run too, which makes nothing."""
    code = _run(parquet_repo, tmp_path, "--mlflow-experiment", " ", "--dry-run")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--mlflow-experiment is empty" in err and not (tmp_path / "results").exists()


def test_an_unreachable_server_is_one_line_under_dry_run_too(parquet_repo, tmp_path, capsys):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    code = _run(parquet_repo, tmp_path, "--models", "betavae", "--mlflow-uri", uri, "--dry-run")
    err = capsys.readouterr().err
    assert code == 2 and f"the MLflow tracking server {uri} cannot be reached" in err, err
