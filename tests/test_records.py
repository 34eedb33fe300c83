"""A record is one typed model (`results.Record`, its parts in `record_parts.py`): made by
`Record.ok` / `Record.failed`, read back the same, and the records older code wrote still read
with the same identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.config import RunConfig, identity
from benchmark.records.record_parts import DatasetInfo, Environment, Measured
from benchmark.records.results import SCHEMA_VERSION, Record, RecordError
from benchmark.report.compare import config_identity
from benchmark.running.suites import resolve_suite

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "reports").rglob("results/**/*.json"))
# A record schema-1 code wrote (before train.engine and train.compile existed), kept here so
# that the reports can be regenerated without losing the case.
OLDER_SCHEMA = sorted((ROOT / "tests" / "data" / "records").glob("schema1-*.json"))


def test_a_finished_cells_record_is_made_from_its_parts():
    cell = resolve_suite("quick").cells()[0]
    measured = Measured(
        metrics={"recon/mse": 1.5, "gen/mse": 2.0},
        unavailable={"gen/fid": "disabled by eval.fid=false"},
        sampler={"name": "normal"},
    )
    environment = {"device": "cpu", "packages": {"torch": "2.14.1"}, "git_sha": None}
    record = Record.ok(
        cell,
        measured,
        training={"steps": 10},
        dataset_info={"name": "mnist-5k", "splits": {"train": 3800}},
        environment=environment,
        timings={"train": 1.0},
        incomplete={"images": "failed: OSError: disk full"},
    )
    assert record.status == "ok" and record.error is None
    assert isinstance(record.config, RunConfig) and record.config == cell
    assert record.config_hash == cell.config_hash()
    assert (record.suite, record.model, record.seed) == (cell.suite, cell.model, cell.seed)
    assert record.metrics == measured.metrics and record.sampler == {"name": "normal"}
    assert set(record.provenance) == set(measured.metrics)  # each measured metric is stamped
    assert isinstance(record.environment, Environment) and record.environment.device == "cpu"
    assert isinstance(record.dataset_info, DatasetInfo) and record.dataset_info.splits["train"]
    assert not record.finished  # something to complete on a rerun
    written = record.as_dict()
    assert "git_sha" not in written["environment"]  # not known: left out, reads back as None
    assert Record.parse(written) == record


def test_a_failed_cells_record_keeps_what_was_known():
    cell = resolve_suite("quick").cells()[0]
    record = Record.failed(cell, "TrainingDiverged: non-finite loss", timings={"total": 2.0})
    assert record.status == "failed" and record.error == "TrainingDiverged: non-finite loss"
    assert record.metrics == {} and record.provenance == {} and record.timings == {"total": 2.0}
    assert record.config_hash == cell.config_hash()


@pytest.mark.parametrize(
    ("part", "value", "field"),
    [
        ("environment", {"device": "cpu", "gpu_name": "H200"}, "environment.gpu_name"),
        ("dataset_info", {"splits": {"train": "many"}}, "dataset_info.splits.train"),
        ("config", {"train": {"epochs": 0}}, "config"),
    ],
)
def test_a_bad_part_is_one_line_naming_its_field(part, value, field):
    cell = resolve_suite("quick").cells()[0]
    data = Record.failed(cell, "x").as_dict()
    data[part] = value if part != "config" else {**data["config"], **value}
    with pytest.raises(RecordError, match=f"^r.json: {field}") as raised:
        Record.parse(data, "r.json")
    assert "\n" not in str(raised.value)


def test_a_record_of_the_older_schema_is_kept_as_a_case():
    assert OLDER_SCHEMA, "tests/data/records/schema1-*.json is missing"
    for path in OLDER_SCHEMA:
        raw = json.loads(path.read_text())
        assert raw["schema_version"] < SCHEMA_VERSION and "engine" not in raw["config"]["train"]


@pytest.mark.parametrize(
    "path", COMMITTED + OLDER_SCHEMA, ids=lambda p: f"{p.parent.parent.name}/{p.name}"
)
def test_committed_records_still_read_with_the_same_identity(path):
    """The reports' records and the kept schema-1 one: their config reads as the config model,
    with the same identity `compare` gave the stored dict, and nothing they said is lost when
    read and written again."""
    raw = json.loads(path.read_text())
    record = Record.read(path)
    assert isinstance(record.config, RunConfig) and record.config_hash == raw["config_hash"]
    assert config_identity(record) == identity(raw["config"], "seeds")
    again = record.as_dict()
    for section in ("environment", "dataset_info"):
        known = {k: v for k, v in raw[section].items() if v is not None}
        assert again[section] == known, section
    assert again["metrics"] == raw["metrics"] and again["unavailable"] == raw["unavailable"]
    assert Record.parse(again) == record
