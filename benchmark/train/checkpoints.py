"""A cell's final weights, kept beside its record as safetensors (no pickle to load).

The file holds the model's state dict and, as safetensors metadata, the resolved cell config,
its hash and the image shape: enough to rebuild the model and re-score it (`vaebench
evaluate`) without retraining. A record whose checkpoint is missing is still a valid record.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmark import files
from benchmark.config import RunConfig
from benchmark.models import FAMILIES
from benchmark.records.cellfiles import run_folder

FORMAT = "vaebench-checkpoint/1"


class CheckpointError(ValueError):
    """A file that is not a readable vaebench checkpoint; the message is one line."""


def save_checkpoint(path: Path, model: torch.nn.Module, config: RunConfig, input_shape) -> Path:
    """Written to a temporary, then renamed: a reader never sees half a file
    (benchmark/files.py)."""
    from safetensors.torch import save_model

    metadata = {
        "format": FORMAT,
        "config": config.model_dump_json(),
        "config_hash": config.config_hash(),
        "input_shape": json.dumps(list(input_shape)),
    }
    # save_model handles shared (tied) tensors
    files.write_with(
        path,
        lambda temporary: save_model(model, str(temporary), metadata=metadata),
        run_folder(path),
    )
    return path


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path}: not a safetensors file ({error})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vaebench checkpoint ({FORMAT})")
    return metadata


def load_checkpoint(path: Path, device: str = "cpu"):
    """(model, config, params): the family's model rebuilt from the stored config and filled
    with the stored tensors (strict: every tensor must match)."""
    from safetensors.torch import load_model

    metadata = read_metadata(path)
    config = RunConfig.model_validate_json(metadata["config"])
    family = FAMILIES.get(config.model)
    params = family.params_model(**config.params)
    model = family.build(params, tuple(json.loads(metadata["input_shape"])), config.arch)
    load_model(model, str(path), strict=True, device=str(device))
    return model.to(device), config, params
