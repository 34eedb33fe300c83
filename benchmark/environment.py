"""Provenance for records: git sha, package versions, device and hardware.

Float results differ between CPU types (AVX2, AVX-512, AMX kernels round differently) and
between GPUs, drivers and cuDNN versions, so a record names the hardware that made it (its
`Environment`, `benchmark/records/record_parts.py`, whose `hardware_id` is the one line by which the
report and `compare` tell hardware apart).
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = (
    "vaebench",
    "torch",
    "torchvision",
    "pythae",
    "datasets",
    "lpips",
    "piq",
    "wandb",
    "numpy",
    "pandas",
    "seaborn",
    "mlxtend",
)


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        # dirty: uncommitted changes to the package's own code (a regenerated report or a
        # results folder inside the checkout is not a change of code)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> str:
    """What computed a number: the package version, plus the git commit when run from a
    checkout (`0.1.0+1a2b3c4d5e6f`, `-dirty` with uncommitted changes)."""
    try:
        version = metadata.version("vaebench")
    except metadata.PackageNotFoundError:
        version = "unknown"
    sha = git_sha()
    if not sha:
        return version
    return f"{version}+{sha[:12]}" + ("-dirty" if sha.endswith("-dirty") else "")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _output_of(command: list[str], timeout: float = 10) -> str:
    """What a command prints, stripped; empty when it is missing, fails or hangs."""
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo` on Linux, sysctl on macOS), else the machine."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("model name", "Model", "Hardware")) and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    brand = _output_of(["sysctl", "-n", "machdep.cpu.brand_string"])
    return brand or platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def nvidia_driver() -> str | None:
    """The NVIDIA driver version (nvidia-smi); torch knows only the CUDA API level."""
    versions = _output_of(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return versions.split()[0] if versions else None


def hardware(device: str) -> dict:
    """What computed the numbers: the CPU (model, the vector ISA torch's kernels use, cores,
    torch threads) and, on a GPU, the card (name, compute capability, CUDA, cuDNN, driver)."""
    info: dict = {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device == "cuda":
        index = torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        info["gpu"] = {
            "name": torch.cuda.get_device_name(index),
            "compute_capability": f"{major}.{minor}",
            "cuda": torch.version.cuda,
            "cudnn": str(cudnn) if cudnn else None,
            "driver": nvidia_driver(),
        }
    return info


def describe(device: str) -> dict:
    """This process's environment, as `Environment` reads it (trackers log it as it is)."""
    hw = hardware(device)
    return {
        "git_sha": git_sha(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "device_name": hw["gpu"]["name"] if "gpu" in hw else hw["cpu"],
        "torch_threads": hw["torch_threads"],
        "hardware": hw,
    }
