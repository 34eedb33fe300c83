"""Records name the hardware that made them; the report and `compare` say when it differs
(float results differ between CPU types: the same config gave VAEGAN recon/ssim 0.7553 on an
AVX-512/AMX machine against 0.7504 on another)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import torch

from benchmark import environment
from benchmark.cli import main
from benchmark.records.record_parts import Environment
from benchmark.report import from_directory, write_report
from benchmark.running.suites import expand_cells, resolve_suite
from conftest import write_record

CPU_A = {"cpu": "AMD EPYC 9654", "cpu_capability": "AVX512", "cpu_count": 2, "torch_threads": 2}
CPU_B = {"cpu": "Intel Xeon 8480+", "cpu_capability": "AMX", "cpu_count": 2, "torch_threads": 2}


def cpu_named_by_lscpu() -> str:
    """The CPU's model as util-linux's `lscpu` names it (a reading apart from the package's)."""
    if shutil.which("lscpu") is None:
        pytest.skip("lscpu (util-linux) is not installed")
    listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"^Model name:\s*(.+)$", listing, re.MULTILINE)
    assert found, listing
    return found.group(1).strip()


def test_a_record_names_cpu_model_isa_and_threads():
    described = environment.describe("cpu")
    hardware = described["hardware"]
    assert hardware["cpu"] == cpu_named_by_lscpu()
    assert hardware["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert hardware["torch_threads"] == torch.get_num_threads() == described["torch_threads"]
    assert "gpu" not in hardware
    assert (
        Environment.model_validate(described).hardware_id
        == f"{hardware['cpu']} ({hardware['cpu_capability']})"
    )


def test_a_gpu_is_named_with_capability_cuda_and_cudnn():
    gpu = {
        "name": "NVIDIA H200",
        "compute_capability": "9.0",
        "cuda": "12.8",
        "cudnn": "91002",
        "driver": "570.124.06",
    }
    assert (
        Environment.model_validate({"hardware": {**CPU_A, "gpu": gpu}}).hardware_id
        == "NVIDIA H200 (sm 9.0, CUDA 12.8, cuDNN 91002)"
    )
    assert Environment(device_name="x86_64").hardware_id == "x86_64"  # older records


def write_records(folder, hardware_by_seed: dict[int, dict], ssim: float = 0.5):
    suite = resolve_suite("quick", ["train.epochs=1"], ["betavae"], None, list(hardware_by_seed))
    for cell in expand_cells(suite):
        env = {"device": "cpu", "hardware": hardware_by_seed[cell.seed]}
        metrics = {"recon/ssim": ssim + cell.seed / 100, "recon/mse": 20.0, "gen/ssim": 0.6}
        write_record(folder, cell, metrics=metrics, environment=env)
    return folder


def test_the_report_says_mixed_hardware_at_the_top(tmp_path):
    mixed = write_records(tmp_path / "mixed", {0: CPU_A, 1: CPU_B})
    report = write_report(from_directory(mixed), mixed).read_text()
    top = report.split("## ")[0]
    assert "**Mixed hardware**" in top
    assert (
        "`AMD EPYC 9654 (AVX512)` (1 cells)" in top and "`Intel Xeon 8480+ (AMX)` (1 cells)" in top
    )
    same = write_records(tmp_path / "same", {0: CPU_A, 1: CPU_A})
    assert "Mixed hardware" not in write_report(from_directory(same), same).read_text()


def test_compare_says_in_one_line_when_the_hardware_differs(tmp_path, capsys):
    baseline = write_records(tmp_path / "a", {0: CPU_A, 1: CPU_A})
    other_machine = write_records(tmp_path / "b", {0: CPU_B, 1: CPU_B})
    same_machine = write_records(tmp_path / "c", {0: CPU_A, 1: CPU_A})
    assert main(["compare", str(baseline), str(other_machine)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "hardware" in line]
    assert notes == [
        "vaebench: note: baseline and run come from different hardware (baseline: "
        "AMD EPYC 9654 (AVX512); run: Intel Xeon 8480+ (AMX)): float results differ between them"
    ]
    assert main(["compare", str(baseline), str(same_machine)]) == 0
    assert "hardware" not in capsys.readouterr().out
    # a stored baseline keeps its hardware
    stored = tmp_path / "baseline.json"
    assert main(["compare", str(baseline), "--write-baseline", str(stored)]) == 0
    capsys.readouterr()
    assert main(["compare", str(stored), str(other_machine)]) == 0
    assert "come from different hardware" in capsys.readouterr().out
