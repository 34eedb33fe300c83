"""Fault injection: a tiny suite killed with SIGKILL at several points, then run again.

SIGKILL leaves no chance to clean up (no handler runs), as when SLURM's grace period ends or
the OOM killer strikes. After the rerun every cell must be present exactly once, valid, with no
partial or temporary file left, and the report must match the records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmark.records.results import Record
from benchmark.running.suites import expand_cells, resolve_suite
from conftest import TINY_SETTINGS

# Runs the CLI with one function wrapped so that the process SIGKILLs itself at POINT.
LAUNCHER = r"""
import os, signal, sys
import benchmark.files as files
import benchmark.running.cell as one_cell
from benchmark import cli

point, args = sys.argv[1], sys.argv[2:]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "training":  # in the middle of the second cell's training
    real_train, trained = one_cell.train, []
    def train(family, model, data, config, params, on_epoch=None, on_step=None, **k):
        trained.append(1)
        steps = []
        def step(values):
            steps.append(1)
            if len(trained) == 2 and len(steps) == 3:
                die()
            if on_step:
                on_step(values)
        return real_train(family, model, data, config, params, on_epoch, step, **k)
    one_cell.train = train
elif point == "record":  # half-way through writing the second record
    real_write, written = files.write_text, []
    def write(path, text, root=None):
        if path.suffix == ".json" and "results" in path.parts:
            written.append(1)
            if len(written) == 2:
                with open(path.with_name(f".{path.name}.partial.tmp"), "w") as handle:
                    handle.write(text[: len(text) // 2])
                die()
        real_write(path, text, root)
    files.write_text = write
elif point == "report":  # half-way through writing REPORT.md
    real_write = files.write_text
    def write(path, text, root=None):
        if path.name == "REPORT.md":
            with open(path.with_name(f".{path.name}.partial.tmp"), "w") as handle:
                handle.write(text[: len(text) // 2])
            die()
        real_write(path, text, root)
    files.write_text = write
sys.exit(cli.main(args))
"""


def run(point: str, out, parquet_repo) -> subprocess.CompletedProcess:
    args = ["run", "--datasets", str(parquet_repo), "--wandb", "off", "--out", str(out)]
    args += [f"--set={s}" for s in TINY_SETTINGS] + ["--set=train.epochs=2"]
    # a killed process cannot remove its temporary folders: keep them in the test's own
    scratch = out.parent / f"{out.name}-tmp"
    scratch.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, point, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(scratch)},
    )


@pytest.mark.parametrize("point", ["training", "record", "report"])
def test_a_suite_killed_at_any_point_resumes_to_the_same_complete_results(
    point, parquet_repo, tmp_path
):
    killed = run(point, tmp_path, parquet_repo)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    resumed = run("none", tmp_path, parquet_repo)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    cells = expand_cells(
        resolve_suite("quick", [*TINY_SETTINGS, "train.epochs=2"], datasets=[str(parquet_repo)])
    )
    finished_before = 3 if point == "report" else 1
    assert resumed.stdout.count("finished earlier with the same config") == finished_before
    results = tmp_path / "results"
    records = sorted(p.name for p in results.rglob("*.json"))
    assert records == sorted(f"{c.cell_id}.json" for c in cells)  # each exactly once
    for path in results.rglob("*.json"):
        assert Record.read(path).status == "ok"
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".claim"))]
    assert leftovers == [] and not list(tmp_path.rglob("*.invalid-*"))
    report = (tmp_path / "REPORT.md").read_text()
    assert "Cells: 3 (3 ok, 0 failed)" in report
    for path in results.rglob("*.json"):
        assert json.loads(path.read_text())["config_hash"] in report
