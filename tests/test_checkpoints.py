"""Checkpoints beside the records, and `vaebench evaluate` re-scoring from them."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from benchmark.cli import main
from benchmark.models import FAMILIES
from benchmark.records.cellfiles import CellFiles
from benchmark.records.results import Record
from benchmark.report import from_directory, write_report
from benchmark.running import resources, runner
from benchmark.running.rescoring import rescore
from benchmark.running.suites import resolve_suite
from benchmark.tracking import wandb_records
from benchmark.train.checkpoints import CheckpointError, load_checkpoint, read_metadata
from conftest import random_set_features

NO_WEIGHTS = resources.MetricNetworks(
    lpips=lambda device, net="vgg": (None, "no VGG16 here"),
    features=lambda device: (None, "no Inception"),
)


@pytest.fixture
def finished(tiny_suite_args, tmp_path):
    args = dict(tiny_suite_args, overrides=[*tiny_suite_args["overrides"], "eval.fid=false"])
    suite = resolve_suite(**args)
    records = runner.run_suite(suite, tmp_path, log=lambda m: None, networks=NO_WEIGHTS)
    assert all(r.status == "ok" for r in records)
    return suite, tmp_path, records


@pytest.mark.parametrize("name", FAMILIES.names())
def test_checkpoint_round_trip_rebuilds_the_same_model(name, finished):
    suite, out, _ = finished
    config = next(c for c in suite.cells() if c.model == name)
    path = CellFiles.of(out, config).checkpoint
    model, loaded_config, params = load_checkpoint(path)
    assert loaded_config == config
    assert path.with_suffix(".json").exists()
    with open(path, "rb") as stream:  # safetensors: an 8-byte header length, then JSON
        assert stream.read(9)[8:] == b"{"
    state = model.state_dict()
    if name == "vqvae":
        assert {"quantizer.cluster_size", "quantizer.ema_embed"} <= set(state)
    torch.manual_seed(3)
    x = torch.rand(4, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        out_a = model.decoder(model.encoder(x).embedding).reconstruction
    again, _, _ = load_checkpoint(path)
    again.eval()
    with torch.no_grad():
        out_b = again.decoder(again.encoder(x).embedding).reconstruction
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(state[k], v) for k, v in again.state_dict().items())


def test_a_pickle_at_the_checkpoint_path_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "cell.safetensors"
    path.write_bytes(pickle.dumps(Planted()))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)
    assert not marker.exists()


def test_evaluate_reproduces_the_stored_metrics(finished):
    suite, out, records = finished
    updated = rescore(out, log=lambda m: None, networks=NO_WEIGHTS)
    assert len(updated) == len(records) == 3
    updated = {r.model: r for r in updated}
    for before in records:
        after = updated[before.model]
        assert after.metrics.keys() == before.metrics.keys()
        for key, value in before.metrics.items():
            assert after.metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
        assert after.unavailable == before.unavailable
        assert after.config_hash == before.config_hash
        assert set(after.provenance) == set(after.metrics)
        assert all(p["at"] >= before.created_at for p in after.provenance.values())
    # the runner still sees every cell as finished
    again = runner.run_suite(suite, out, log=lambda m: None, networks=NO_WEIGHTS)
    assert [r.created_at for r in again] == [r.created_at for r in records]


def test_evaluate_adds_a_metric_the_run_did_not_compute(finished):
    _, out, records = finished
    assert all("gen/fid" not in r.metrics for r in records)
    assert records[0].unavailable["gen/fid"] == "disabled by eval.fid=false"
    networks = resources.MetricNetworks(lpips=NO_WEIGHTS.lpips, features=random_set_features)
    updated = rescore(out, metrics=["fid", "gen/kid"], log=lambda m: None, networks=networks)
    updated = {r.model: r for r in updated}
    for before in records:
        after = updated[before.model]
        for key in ("recon/fid", "gen/fid", "gen/kid"):
            assert after.metrics[key] >= 0 and key not in after.unavailable
            assert after.provenance[key]["at"] >= before.created_at
        assert after.distribution["features"] == "random"
        untouched = {k: v for k, v in after.metrics.items() if not k.endswith(("fid", "kid"))}
        assert untouched == before.metrics
        assert after.provenance["recon/mse"] == before.provenance["recon/mse"]
        assert after.config.eval.fid is False  # the config, and its hash, stay


def test_a_record_without_its_checkpoint_stays_valid_and_is_left_alone(finished):
    suite, out, records = finished
    config = suite.cells()[0]
    CellFiles.of(out, config).checkpoint.unlink()
    Record.read(CellFiles.of(out, config).record)
    logs = []
    updated = rescore(out, log=logs.append, networks=NO_WEIGHTS)
    assert len(updated) == 2
    assert any("no checkpoint beside the record; kept as it is" in line for line in logs)


def test_the_report_marks_a_mix_of_code_versions(finished):
    suite, out, _ = finished
    path = CellFiles.of(out, suite.cells()[0]).record
    record = json.loads(path.read_text())
    record["provenance"]["recon/mse"]["code"] = "0.0.9+0123456789ab"
    path.write_text(json.dumps(record))
    report = write_report(from_directory(out), out).read_text()
    assert "**Mixed code versions**" in report and "`0.0.9+0123456789ab` (1 values)" in report


def test_evaluate_cli_refuses_an_unknown_metric_in_one_line(finished, capsys):
    _, out, _ = finished
    assert main(["evaluate", str(out), "--metrics", "fdi"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "vaebench evaluate: error: unknown metric 'fdi'; did you mean 'fid'? valid: "
        + err.split("valid: ", 1)[1]
    )
    assert "\n" not in err


def test_a_retrained_cell_keeps_the_older_checkpoint_in_history(finished, tiny_suite_args):
    suite, out, records = finished
    config = next(c for c in suite.cells() if c.model == "betavae")
    old_hash = config.config_hash()
    args = dict(
        tiny_suite_args,
        overrides=[*tiny_suite_args["overrides"], "eval.fid=false", "betavae.beta=2"],
        models=["betavae"],
    )
    runner.run_suite(resolve_suite(**args), out, log=lambda m: None, networks=NO_WEIGHTS)
    history = CellFiles.of(out, config).checkpoint.parent / "history"
    kept = history / f"{config.cell_id}.{old_hash}.safetensors"
    assert kept.exists()
    _, kept_config, _ = load_checkpoint(kept)
    assert kept_config.config_hash() == old_hash
    assert load_checkpoint(CellFiles.of(out, config).checkpoint)[1].params["beta"] == 2


def test_evaluate_sampler_writes_the_record_a_run_with_that_sampler_writes(
    finished, tiny_suite_args, tmp_path_factory
):
    suite, out, records = finished
    logs = []
    updated = rescore(out, sampler="gmm", log=logs.append, networks=NO_WEIGHTS)
    by_model = {r.model: r for r in updated}
    assert set(by_model) == {"betavae", "vaegan"}  # VQVAE samples from codes: left alone
    assert any("vqvae samples with prior, uniform; its sampler stays" in line for line in logs)

    args = dict(tiny_suite_args, models=["betavae", "vaegan"])
    args["overrides"] = [*args["overrides"], "eval.fid=false", "eval.sampler=gmm"]
    direct = runner.run_suite(
        resolve_suite(**args), tmp_path_factory.mktemp("gmm"), log=lambda m: None,
        networks=NO_WEIGHTS,
    )  # fmt: skip
    for run in direct:
        rescored = by_model[run.model]
        assert rescored.config_hash == run.config_hash
        assert rescored.sampler["name"] == "gmm"
        assert rescored.metrics == pytest.approx(run.metrics, rel=1e-6, abs=1e-9)
        before = next(r for r in records if r.model == run.model)
        assert rescored.metrics["gen/mse"] != before.metrics["gen/mse"]
        assert rescored.training == before.training  # not trained again
        config = next(c for c in suite.cells() if c.model == run.model)
        kept = (
            CellFiles.of(out, config).record.parent
            / "history"
            / (f"{config.cell_id}.{before.config_hash}.json")
        )
        assert Record.read(kept).metrics == before.metrics  # the record it was

    # the suite as it was (each family's default sampler): scored again, not retrained
    logs = []
    again = runner.run_suite(suite, out, log=logs.append, networks=NO_WEIGHTS)
    assert sum("scored from its checkpoint with eval.sampler=normal" in m for m in logs) == 2, logs
    assert not any(": training " in m for m in logs)
    for record in records:
        now = next(r for r in again if r.model == record.model)
        assert now.config_hash == record.config_hash
        assert now.metrics == pytest.approx(record.metrics, rel=1e-6, abs=1e-9)


def test_evaluate_cli_refuses_a_sampler_a_family_cannot_use(finished, capsys):
    _, out, _ = finished
    assert main(["evaluate", str(out), "--sampler", "vqvae=gmm"]) == 2
    assert capsys.readouterr().err.strip() == (
        "vaebench evaluate: error: eval.sampler.vqvae=gmm: vqvae samples with prior, uniform "
        "(default prior)"
    )
    assert main(["evaluate", str(out), "--sampler", "gmn"]) == 2
    assert "unknown sampler 'gmn'; did you mean 'gmm'?" in capsys.readouterr().err


def test_evaluate_updates_the_cells_online_wandb_run(finished, monkeypatch):
    import wandb
    from test_tracking import StandInApi

    suite, out, _ = finished
    config = suite.cells()[0]
    path = CellFiles.of(out, config).record
    record = json.loads(path.read_text())
    record["tracker_run"] = {"tracker": "wandb", "path": "me/proj/run1", "mode": "online"}
    path.write_text(json.dumps(record))
    monkeypatch.setattr(wandb, "Api", StandInApi)
    StandInApi.written = {}
    rescored = rescore(
        out, log=lambda m: None, networks=NO_WEIGHTS, update_run=wandb_records.update_run
    )
    (updated,) = [r for r in rescored if r.model == config.model]
    summary = StandInApi.written["me/proj/run1"]
    assert {k: summary[k] for k in updated.metrics} == updated.metrics
    assert len(StandInApi.written) == 2  # that run's summary and config; the others are off


def test_cells_finished_by_an_older_version_are_scored_again_not_retrained(finished):
    """Results written before `data.label_column` and `eval.classifier` existed: their configs
    hash differently now, yet they train the same model. `vaebench run` scores them from their
    checkpoints (the classifier metrics join in) instead of training them again, and
    `vaebench evaluate` accepts their checkpoints."""
    import hashlib

    from safetensors.torch import load_file, save_file

    suite, out, _ = finished
    for config in suite.cells():
        path = CellFiles.of(out, config).record
        old = config.model_dump(mode="json")
        del old["data"]["label_column"], old["eval"]["classifier"]
        canonical = json.dumps(
            {k: v for k, v in old.items() if k != "suite"}, sort_keys=True, separators=(",", ":")
        )
        old_hash = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        record = json.loads(path.read_text())
        record.update(config=old, config_hash=old_hash)
        record["unavailable"] = {
            k: v for k, v in record["unavailable"].items() if not k.endswith("cfd")
        }
        path.write_text(json.dumps(record))
        checkpoint = CellFiles.of(out, config).checkpoint
        metadata = read_metadata(checkpoint)
        metadata.update(config=json.dumps(old), config_hash=old_hash)
        save_file(load_file(checkpoint), checkpoint, metadata=metadata)

    assert rescore(out, metrics=["mse"], log=lambda m: None, networks=NO_WEIGHTS)
    logs: list[str] = []
    records = runner.run_suite(suite, out, log=logs.append, networks=NO_WEIGHTS)
    assert not any("training " in line for line in logs), logs
    assert sum("scored from its checkpoint" in line for line in logs) == len(records)
    for record, config in zip(records, suite.cells(), strict=True):
        assert record.config_hash == config.config_hash()
        assert "gen/cfd" in record.unavailable  # measured now (this dataset: no labels)


def test_evaluate_provisions_the_networks_the_asked_metrics_need_first(
    finished, monkeypatch, capsys
):
    """`vaebench evaluate --metrics gen/fid` fetches the Inception weights (as `vaebench run`
    does) before re-scoring; where they cannot be had, it says so in one line and goes on."""
    from benchmark.data import weights
    from benchmark.running.rescoring import rescoring_configs

    _, out, _ = finished
    assert all(not c.eval.fid for c in rescoring_configs(out, None))
    assert all(c.eval.fid for c in rescoring_configs(out, ["gen/fid"]))
    asked = []

    def unavailable(network, log):
        asked.append(network.name)
        raise weights.WeightsUnavailable("no route to the package index")

    monkeypatch.setattr(weights, "offline", lambda: False)
    monkeypatch.setattr(weights, "provide", unavailable)
    monkeypatch.setattr("benchmark.running.rescoring.rescore", lambda *a, **k: [])
    capsys.readouterr()
    assert main(["evaluate", str(out), "--metrics", "gen/fid"]) == 0
    assert weights.FID_INCEPTION.name in asked
    assert "no route to the package index; its metrics will be n/a" in capsys.readouterr().out
