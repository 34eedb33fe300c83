"""Typed configuration: every section rejects unknown keys (pythae's configs silently drop them).

A *cell* of a suite (one dataset x model x seed) is described by one `RunConfig`; its
canonical JSON is hashed so that a rerun can recognise finished cells.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from benchmark.errors import UserInputError, unknown_name

# names that become file and folder names (suite, model, cell id): no separators, no dots first
SLUG = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


# Every value has a range a real run can satisfy, checked when the suite is resolved (one line,
# exit 2, before any cell): no float is NaN or infinite, and these bound the rest.
MAX_SEED = 2**32 - 1  # numpy's seed range; torch's is wider
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536
MAX_LEARNING_RATE = 10.0
MAX_WIDTH = 4_096  # channels, latent dimensions, codebook vectors' dimension
MAX_IMAGES = 10_000_000  # max_train, max_test, n_gen


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(Section):
    """How a dataset becomes train / val / test uint8 tensors."""

    image_column: str | None = None  # None: the first column with an Image feature
    # class indices for the dataset's own classifier (gen/cfd, precision, recall); None: the
    # registered dataset's, else the first ClassLabel column; no labels: those metrics n/a
    label_column: str | None = None
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)  # carved from train, for per-epoch val losses
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # only for sources without a test split
    max_train: int | None = Field(
        None, ge=1, le=MAX_IMAGES
    )  # deterministic subset (for quick runs)
    max_test: int | None = Field(None, ge=1, le=MAX_IMAGES)
    image_size: int | None = Field(
        None, ge=4, le=1024
    )  # square resize (CelebA: 64); None keeps the size
    # one channel mode for the whole dataset: 1 (grayscale) or 3 (RGB); None: the mode of most
    # images. Recorded in the record's dataset_info (channels, channel_rule)
    channels: Literal[1, 3] | None = None
    split_seed: int = Field(
        0, ge=0, le=MAX_SEED
    )  # fixed, independent of the run seed: every cell sees the same split


class TrainConfig(Section):
    epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    learning_rate: float = Field(1e-3, gt=0, le=MAX_LEARNING_RATE)
    optimizer: Literal["Adam", "AdamW", "SGD", "RMSprop"] = "Adam"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # NHWC tensors for the convolutions: faster on CPUs with oneDNN (measured by vaebench perf);
    # same results up to float rounding
    channels_last: bool = False
    # bf16: the forward passes under torch.autocast (weights, gradients and optimiser stay fp32);
    # faster where the device has bf16 units, losses within ~1% of fp32 (vaebench perf, tests)
    precision: Literal["fp32", "bf16"] = "fp32"
    # CPU threads a cell computes with (torch's, and BLAS/OpenMP's in numpy and scikit-learn).
    # Float sums split by thread count, so it is part of the cell's configuration (and hash):
    # one config gives one set of numbers on one machine, alone or beside others (--jobs)
    threads: int = Field(2, ge=1, le=1_024)
    # pythae: pythae's trainer runs the loop. vaebench: the same models, losses, optimisers and
    # schedulers in a loop of our own with no host read inside a step (benchmark/train/engine.py)
    engine: Literal["pythae", "vaebench"] = "pythae"
    # vaebench engine only: the step's forward (and so its backward) and the optimiser update
    # through torch.compile; same losses within fp32 rounding (random draws as in eager)
    compile: Literal["off", "default", "max-autotune-no-cudagraphs"] = "off"

    @field_validator("engine")
    @classmethod
    def _an_optimiser_our_engine_steps(cls, value: str, info: ValidationInfo) -> str:
        if value == "vaebench" and info.data.get("optimizer") not in ("Adam", "AdamW"):
            raise ValueError("steps Adam or AdamW only: set train.optimizer=Adam or AdamW")
        return value

    @field_validator("compile")
    @classmethod
    def _compiled_by_our_engine(cls, value: str, info: ValidationInfo) -> str:
        if value != "off" and info.data.get("engine") != "vaebench":
            raise ValueError("compiles the vaebench engine's step: set train.engine=vaebench")
        return value


class CodePriorConfig(Section):
    """VQVAE's `prior` sampler: a PixelCNN over the code maps, fitted after training."""

    layers: int = Field(6, ge=1, le=64)
    channels: int = Field(64, ge=1, le=MAX_WIDTH)
    kernel_size: int = Field(5, ge=3, le=31)  # odd: the mask splits the window at its centre
    epochs: int = Field(8, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    learning_rate: float = Field(1e-3, gt=0, le=MAX_LEARNING_RATE)

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd")
        return value


class EvalConfig(Section):
    seed: int = Field(
        1234, ge=0, le=MAX_SEED
    )  # fixed evaluation seed: same checkpoint -> same numbers
    n_gen: int | None = Field(
        None, ge=1, le=MAX_IMAGES
    )  # generated images; None = size of the test set
    batch_size: int = Field(500, ge=1, le=MAX_BATCH)
    lpips: bool = True  # computed only where its backbone's weights are provisioned
    # LPIPS's backbone: VGG16 (the seed's, and LPIPS's own recommendation as a metric) or AlexNet
    lpips_net: Literal["vgg", "alex"] = "vgg"
    fid: bool = True  # gen/fid, gen/kid, recon/fid: only when the Inception weights are available
    # gen/cfd, recon/cfd, gen/precision, gen/recall in the dataset's own classifier (trained on
    # its labelled training split, cached): realism without downloaded weights
    classifier: bool = True
    # where gen/ samples come from: None = each family's default; a name for every family of
    # the suite; or {model: name}. A cell's config holds the name it resolved to.
    sampler: str | dict[str, str] | None = None
    gmm_components: int = Field(10, ge=1, le=1_000)  # the `gmm` sampler, as in pythae's benchmark
    prior: CodePriorConfig = CodePriorConfig()


# SLURM settings are pasted into a batch script: a newline there would add lines to it
_NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"


PATTERN_RULES = {
    SLUG: "must be a slug: letters, digits, '.', '_' and '-', starting with a letter or digit "
    "(it becomes a file or folder name)",
    _NO_CONTROL_CHARACTERS: "must not contain control characters such as newlines (it is "
    "written into a batch script)",
}


class SlurmConfig(Section):
    """`slurm:` section of a suite (or `--set slurm.partition=gpu`); not part of any cell."""

    partition: str | None = Field(None, pattern=_NO_CONTROL_CHARACTERS)  # None: the default
    # None: what the cells need. GPUs: one when they train on cuda (or on `auto` in a partition
    # that has GPUs), none otherwise; CPUs: the cells' train.threads
    gpus_per_job: int | None = Field(None, ge=0, le=64)
    cpus_per_job: int | None = Field(None, ge=1, le=4_096)
    mem_gb: int | None = Field(None, ge=1, le=65_536)  # None: the partition's default
    time_min: int = Field(240, ge=1, le=525_600)  # a year
    # at most this many of the suite's jobs run at once (the job array's %N throttle)
    max_parallel: int | None = Field(None, ge=1, le=100_000)
    account: str | None = Field(None, pattern=_NO_CONTROL_CHARACTERS)


class RunConfig(Section):
    """One cell, fully resolved. This is what the record stores and what is hashed."""

    suite: str = Field(pattern=SLUG)
    dataset: str
    model: str = Field(pattern=SLUG)
    seed: int = Field(ge=0, le=MAX_SEED)
    arch: Literal["compact", "pythae"]
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    params: dict[str, Any]  # the family's own hyper-parameters, validated by its params model

    def config_hash(self) -> str:
        """The record's hash: the same cell (`identity(config, "run")`)."""
        return identity(self, "run")

    @property
    def cell_id(self) -> str:
        """A file-name-safe id: `mnist-vaegan-seed0`; paths and hub ids get a short hash."""
        return f"{dataset_slug(self.dataset)}-{self.model}-seed{self.seed}"


# When are two cell configs "the same"? Each question ignores some settings; this table is the
# only place that says which (dotted paths into the config):
SAMENESS: dict[str, tuple[str, ...]] = {
    # the same cell, whatever suite it was run in (a suite's name is a label): the record's
    # config hash, by which a rerun skips a finished cell
    "run": ("suite",),
    # the same trained model: evaluation settings never reach training, and the label column
    # is read only by the classifier metrics. A finished cell that differs only in these is
    # scored again from its checkpoint, not retrained.
    "training": ("suite", "eval", "data.label_column"),
    # one configuration measured over several seeds: what `compare` and baselines group by
    "seeds": ("suite", "seed"),
}


# Settings added after records existed, with the value that does what every earlier record did:
# at that value a setting is left out of every identity, so an upgrade does not make finished
# cells look new (and train them again).
ADDED_LATER: dict[str, Any] = {
    "train.engine": "pythae",
    "train.compile": "off",
    "eval.lpips_net": "vgg",
}


def identity(config: RunConfig | dict[str, Any], sameness: str) -> str:
    """A short hash of `config` (a RunConfig, or a record's stored config) without what the
    `sameness` question ignores: equal hashes, the same for that question."""
    payload = config.model_dump(mode="json") if isinstance(config, RunConfig) else config
    payload = json.loads(json.dumps(payload))  # a copy to drop keys from
    for dotted in SAMENESS[sameness]:
        _pop(payload, dotted)
    for dotted, earlier in ADDED_LATER.items():
        _pop(payload, dotted, only_if=earlier)
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _pop(payload: dict[str, Any], dotted: str, **condition: Any) -> None:
    """Drop the dotted key (`only_if=V`: only when its value is V)."""
    *parents, name = dotted.split(".")
    section = payload
    for parent in parents:
        section = section.get(parent) or {}
    if "only_if" not in condition or section.get(name) == condition["only_if"]:
        section.pop(name, None)


def same_training(a: RunConfig, b: RunConfig) -> bool:
    """Whether two cell configs train the very same model (`SAMENESS["training"]`)."""
    return identity(a, "training") == identity(b, "training")


def dataset_slug(dataset: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9._-]+", dataset):
        return dataset
    last = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset.rstrip("/").rsplit("/", 1)[-1]) or "data"
    return f"{last}-{hashlib.sha1(dataset.encode()).hexdigest()[:6]}"


def validation_error_line(error: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """Turn pydantic's multi-line report into one line naming the key and the valid choices."""
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    key = ".".join([prefix, *loc] if prefix else loc)
    if first["type"] == "extra_forbidden":
        valid = _fields_at(model, loc[:-1])
        return str(unknown_name("config key", key, [_join(prefix, loc[:-1], f) for f in valid]))
    if first["type"] == "string_pattern_mismatch":
        rule = PATTERN_RULES.get(first.get("ctx", {}).get("pattern"), first["msg"])
        return f"invalid config value for '{key}': {first['input']!r} {rule}"
    return f"invalid config value for '{key}': {first['msg']}"


def _join(prefix: str, parents: list[str], field: str) -> str:
    return ".".join([p for p in [prefix, *parents] if p] + [field])


def _fields_at(model: type[BaseModel], path: list[str]) -> list[str]:
    for part in path:
        annotation = model.model_fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return list(model.model_fields)


def validate(model: type[Section], values: dict[str, Any], prefix: str = "") -> Section:
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise UserInputError(validation_error_line(error, model, prefix)) from None
