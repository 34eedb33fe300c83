"""The typed parts of a record (`results.Record`): what scoring measured, the dataset, the
environment. Each refuses unknown keys, as the record does; a value that is not known is left
out of the JSON and reads back as None (records written before a field existed read as they
are).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer


class RecordPart(BaseModel):
    """A typed part of a record: unknown keys refused; a value not known is left out of the
    JSON (as `describe` leaves it out), and reads back as None."""

    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _without_nones(self, handler):
        return {key: value for key, value in handler(self).items() if value is not None}


class Gpu(RecordPart):
    name: str | None = None
    compute_capability: str | None = None
    cuda: str | None = None
    cudnn: str | None = None
    driver: str | None = None


class Hardware(RecordPart):
    machine: str | None = None
    cpu: str | None = None
    cpu_capability: str | None = None  # the vector ISA torch's CPU kernels use
    cpu_count: int | None = None
    torch_threads: int | None = None
    gpu: Gpu | None = None


class Environment(RecordPart):
    """What made a record's numbers: code, packages, device and hardware."""

    git_sha: str | None = None
    packages: dict[str, str | None] = {}
    python: str | None = None
    platform: str | None = None
    device: str | None = None
    device_name: str | None = None
    torch_threads: int | None = None
    hardware: Hardware | None = None  # absent in records written before it existed
    wandb_run: str | None = None  # a record read from W&B: the run it came from

    @property
    def hardware_id(self) -> str | None:
        """One line per kind of hardware: the GPU with its compute capability, CUDA and cuDNN,
        or the CPU with the ISA torch uses. Records written before `hardware` existed: their
        `device_name`, or None."""
        if self.hardware is None:
            return self.device_name
        gpu = self.hardware.gpu
        if gpu is not None:
            return f"{gpu.name} (sm {gpu.compute_capability}, CUDA {gpu.cuda}, cuDNN {gpu.cudnn})"
        return f"{self.hardware.cpu} ({self.hardware.cpu_capability})"


class Measured(RecordPart):
    """What scoring a trained model measured, as its record keeps it (`scoring.score`)."""

    metrics: dict[str, float] = Field(default_factory=dict)
    unavailable: dict[str, str] = Field(default_factory=dict)  # metric key -> why not
    sampler: dict[str, Any] | None = None  # the sampler behind gen/ (None: no gen/ set)
    lpips: dict[str, Any] | None = None  # LPIPS's backbone, version and weights
    distribution: dict[str, Any] | None = None  # how the FID/KID numbers were made
    classifier: dict[str, Any] | None = None  # how cfd, precision and recall were made


class DatasetInfo(RecordPart):
    """Which data a cell trained and was scored on (`data.load_image_splits`)."""

    name: str | None = None
    source: str | None = None  # the hub id, the local path or the embedded module
    origin: str | None = None  # hub, mirror:PATH, local or embedded
    revision: str | None = None
    fingerprint: str | None = None  # of the decoded pixels of every split
    image_column: str | None = None
    image_shape: list[int] | None = None
    channels: int | None = None
    channel_rule: str | None = None  # how the channel count was chosen
    label_column: str | None = None
    classes: int | None = None
    splits: dict[str, int] | None = None
    test_split: str | None = None
