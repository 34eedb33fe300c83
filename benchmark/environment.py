"""Provenance for records: git sha, package versions, device."""

from __future__ import annotations

import functools
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


def describe(device: str) -> dict:
    return {
        "git_sha": git_sha(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "device_name": torch.cuda.get_device_name()
        if device == "cuda"
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
