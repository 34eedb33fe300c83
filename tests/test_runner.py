"""A tiny end-to-end run of all three families, resume, failures, interruption."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest

from benchmark import files
from benchmark.errors import UserInputError
from benchmark.metrics.distribution import InceptionFeatures
from benchmark.metrics.registry import LPIPS, keys_switched_by
from benchmark.records.cellfiles import CellFiles
from benchmark.records.results import SCHEMA_VERSION, Record
from benchmark.running import cell as one_cell
from benchmark.running import resources, runner
from benchmark.running.suites import expand_cells, resolve_suite
from conftest import make_record, random_set_features


def no_weights(tmp_path_factory) -> resources.MetricNetworks:
    """The real loaders, on the tests' empty weights cache: no LPIPS backbone, no Inception."""
    return resources.MetricNetworks(lpips=LPIPS.load, features=InceptionFeatures.load)


@pytest.fixture(scope="module")
def tiny_run(tiny_suite_args, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    suite = resolve_suite(**tiny_suite_args)
    logs: list[str] = []
    records = runner.run_suite(suite, out, log=logs.append, networks=no_weights(tmp_path_factory))
    return suite, out, records, logs


def test_all_three_families_end_to_end(tiny_run):
    suite, out, records, logs = tiny_run
    assert [r.model for r in records] == ["betavae", "vqvae", "vaegan"]
    assert all(r.status == "ok" for r in records), [r.error for r in records]
    for record, config in zip(records, expand_cells(suite), strict=True):
        on_disk = json.loads(CellFiles.of(out, config).record.read_text())
        assert on_disk == record.as_dict()
        assert record.schema_version == SCHEMA_VERSION
        assert record.config_hash == config.config_hash()
        assert record.config.train.epochs == 1
        assert all(type(v) is float and math.isfinite(v) for v in record.metrics.values())
        assert set(record.timings) == {
            "data",
            "train",
            "checkpoint",
            "sampler_fit",
            "eval",
            "total",
            "tracking",
        }
        assert record.sampler["name"] == {"vqvae": "prior"}.get(record.model, "normal")
        assert record.sampler["fit_seconds"] == pytest.approx(
            record.timings["sampler_fit"], abs=1e-3
        )
        assert record.config.eval.sampler == record.sampler["name"]
        assert record.environment.packages["pythae"] == "0.1.2"
        assert record.dataset_info.splits["test"] == 48
        assert record.created_at.endswith("+00:00")
        steps = pd.read_csv(CellFiles.of(out, config).steps)
        assert len(steps) == record.training["steps"] > 0
    assert any("epoch 1/1" in line for line in logs)


def test_pretrained_metrics_without_weights_are_recorded_unavailable(tiny_run):
    for record in tiny_run[2]:
        assert "recon/lpips" not in record.metrics and "gen/lpips" not in record.metrics
        assert record.unavailable["recon/lpips"] == (
            "LPIPS VGG16 backbone not provisioned: run `vaebench prepare`"
        )
        assert record.unavailable["gen/fid"] == (
            "FID Inception-v3 (TF 2015-12-05) not provisioned: run `vaebench prepare`"
        )
        assert set(record.unavailable) == {
            "recon/lpips",
            "gen/lpips",
            "recon/fid",
            "gen/fid",
            "gen/kid",
            # the tiny dataset's `label` column is an int per image, not a ClassLabel
            "recon/cfd",
            "gen/cfd",
            "gen/precision",
            "gen/recall",
        }
        assert record.unavailable["gen/kid"] == record.unavailable["gen/fid"]
        assert record.unavailable["gen/recall"].startswith(
            "no classifier: the dataset has no label column"
        )
        assert not {"recon/fid", "gen/fid", "gen/kid"} & set(record.metrics)
        assert record.distribution is None and record.lpips is None


def test_the_identities_of_metrics_md_hold_on_real_records(tiny_run):
    by_model = {r.model: r.metrics for r in tiny_run[2]}
    for prefix in ("recon/", "gen/"):
        for model in ("betavae", "vaegan"):
            m = {k[len(prefix) :]: v for k, v in by_model[model].items() if k.startswith(prefix)}
            assert m["elbo"] == pytest.approx(m["mse"] + m["kl"], rel=1e-9)
        m = {k[len(prefix) :]: v for k, v in by_model["vaegan"].items() if k.startswith(prefix)}
        alpha = tiny_run[0].vaegan.adversarial_loss_scale
        assert m["encoder_loss"] == pytest.approx(m["kl"] + m["recon_loss"], rel=1e-6)
        assert m["decoder_loss"] == pytest.approx(
            (1 - alpha) * m["recon_loss"] - alpha * m["discriminator_loss"], rel=1e-5, abs=1e-5
        )
        assert m["total_loss"] == pytest.approx(
            m["encoder_loss"] + m["decoder_loss"] + m["discriminator_loss"], rel=1e-6
        )
        m = {k[len(prefix) :]: v for k, v in by_model["vqvae"].items() if k.startswith(prefix)}
        assert m["total_loss"] == pytest.approx(m["recon_loss"] + m["vq_loss"], rel=1e-6)
        assert m["recon_loss"] == pytest.approx(m["mse"], rel=1e-6)  # VQVAE's own loss is the SSE


def test_rerun_skips_finished_cells_and_reruns_changed_ones(tiny_run, tiny_suite_args, tmp_path):
    suite, shared_out, records, _ = tiny_run
    out = tmp_path / "out"  # a copy: the shared run stays as other tests expect it
    shutil.copytree(shared_out, out)
    logs: list[str] = []
    again = runner.run_suite(suite, out, log=logs.append)
    assert again == records  # nothing retrained, the same records returned
    assert sum("skipped" in line for line in logs) == 3
    args = dict(tiny_suite_args, overrides=[*tiny_suite_args["overrides"], "betavae.beta=2"])
    logs.clear()
    changed = runner.run_suite(resolve_suite(**args), out, log=logs.append)
    assert sum("skipped" in line for line in logs) == 2
    assert changed[0].config.params["beta"] == 2.0
    assert changed[0].created_at >= records[0].created_at


def test_a_diverging_cell_becomes_a_failed_record_and_the_suite_goes_on(tiny_suite_args, tmp_path):
    args = dict(
        tiny_suite_args,
        models=["betavae", "vaegan"],
        overrides=[
            *tiny_suite_args["overrides"],
            "train.optimizer=SGD",
            "train.learning_rate=0.01",
            "betavae.learning_rate=10",  # the largest accepted: SGD diverges at once
        ],
    )
    suite = resolve_suite(**args)
    records = runner.run_suite(suite, tmp_path, log=lambda m: None)
    assert [r.status for r in records] == ["failed", "ok"]
    failed = records[0]
    assert failed.error.startswith("TrainingDiverged: non-finite")
    assert failed.metrics == {} and failed.model == "betavae"
    on_disk = CellFiles.of(tmp_path, expand_cells(suite)[0]).record
    assert json.loads(on_disk.read_text())["status"] == "failed"
    # a failed cell is retried on resume
    logs: list[str] = []
    runner.run_suite(resolve_suite(**args), tmp_path, log=logs.append)
    assert sum("skipped" in line for line in logs) == 1


def test_an_unavailable_dataset_is_one_line_before_any_cell(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(one_cell, "run_cell", lambda *a, **k: started.append(a))
    suite = resolve_suite("quick", ["train.epochs=1"], datasets=["cifar10"], models=["betavae"])
    with pytest.raises(UserInputError, match=r"dataset 'cifar10'.*--data-mirror"):
        runner.run_suite(suite, tmp_path, log=lambda m: None)
    assert not started and not (tmp_path / "results").exists()


def test_interrupting_loses_nothing_finished(tiny_suite_args, tmp_path, monkeypatch):
    real_train = one_cell.train
    calls = []

    def interrupted_second_cell(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(one_cell, "train", interrupted_second_cell)
    suite = resolve_suite(**tiny_suite_args)
    with pytest.raises(KeyboardInterrupt):
        runner.run_suite(suite, tmp_path, log=lambda m: None)
    cells = expand_cells(suite)
    assert CellFiles.of(tmp_path, cells[0]).record.exists()
    assert not CellFiles.of(tmp_path, cells[1]).record.exists()
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setattr(one_cell, "train", real_train)
    logs: list[str] = []
    records = runner.run_suite(suite, tmp_path, log=logs.append)
    assert "skipped" in logs[0] and all(r.status == "ok" for r in records)


def test_records_are_written_atomically(tiny_suite_args, tmp_path, monkeypatch):
    cell = expand_cells(resolve_suite(**tiny_suite_args))[0]
    path = CellFiles.of(tmp_path, cell).record
    make_record(cell, metrics={"recon/mse": 1.0}).write(path)

    def dies_before_the_rename(temporary, target):
        raise OSError("killed mid-write")

    monkeypatch.setattr(files.os, "replace", dies_before_the_rename)
    with pytest.raises(OSError):
        make_record(cell, metrics={"recon/mse": 2.0}).write(path)
    assert Record.read(path).metrics == {"recon/mse": 1.0}  # the record before, whole
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_lpips_reaches_the_records_with_its_backbone_and_weights(tiny_suite_args, tmp_path):
    """Through the whole cell (a random AlexNet backbone, tests only): both LPIPS keys, and
    the record names the backbone, the input resize it needed and the weights."""
    networks = resources.MetricNetworks(
        lpips=lambda device, net: (LPIPS(device, None, net), None),
        features=lambda device: (None, "no"),
    )
    suite = resolve_suite(**{**tiny_suite_args, "overrides": [
        *tiny_suite_args["overrides"], "eval.lpips_net=alex"]})  # fmt: skip
    records = runner.run_suite(suite, tmp_path, log=lambda m: None, networks=networks)
    for record in records:
        assert record.status == "ok", record.error
        assert record.metrics["recon/lpips"] > 0 and record.metrics["gen/lpips"] >= 0
        assert record.lpips == {
            "net": "alex",
            "version": "0.1",
            "weights": "random (tests only)",
            "input": "upsampled bilinearly from 28 to 64 px",
        }


def test_fid_and_kid_reach_the_records_and_test_features_are_computed_once(
    tiny_suite_args, tmp_path, monkeypatch
):
    from benchmark.metrics.distribution import DistributionReference

    loads, references = [], []

    def random_features(device):
        loads.append(device)
        return random_set_features(device)

    def counted_reference(features, test_features):
        references.append(len(test_features))
        return DistributionReference(features, test_features)

    monkeypatch.setattr(resources, "DistributionReference", counted_reference)
    networks = resources.MetricNetworks(
        lpips=lambda device, net="vgg": (None, "no"), features=random_features
    )
    records = runner.run_suite(
        resolve_suite(**tiny_suite_args), tmp_path, log=lambda m: None, networks=networks
    )
    assert loads == ["cpu"] and references == [48]  # one network, one test set's features
    for record in records:
        assert record.status == "ok", record.error
        assert all(record.metrics[k] >= 0 for k in ("recon/fid", "gen/fid", "gen/kid"))
        # (and the classifier metrics: the tiny dataset has no ClassLabel column)
        shown = set(record.unavailable) - set(keys_switched_by("classifier"))
        assert shown == {"recon/lpips", "gen/lpips"}
        assert record.distribution == {
            "features": "random",
            "weights": None,  # a test network: no pinned weights to name
            "n_test": 48,
            "n_recon": 48,
            "n_gen": 40,
            "kid_subsets": 100,
            "kid_subset_size": 40,
            "grayscale": "replicated to 3 channels",
            "quantisation": "uint8, round to nearest",
        }
