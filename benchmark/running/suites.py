"""Suites: which datasets x models x seeds to run, with which settings.

Precedence lives here and only here: field defaults < suite file < ``--set`` overrides <
CLI selections (``--models``, ``--datasets``, ``--seeds``).
"""

from __future__ import annotations

import contextlib
import functools
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, create_model

from benchmark.config import (
    SLUG,
    DataConfig,
    EvalConfig,
    RunConfig,
    Section,
    SlurmConfig,
    TrainConfig,
    validate,
)
from benchmark.data.loading import check_dataset_name
from benchmark.errors import UserInputError, unknown_name
from benchmark.models import FAMILIES


class _SuiteBase(Section):
    name: str = Field(pattern=SLUG)  # becomes a folder name: results/NAME/
    description: str = ""
    datasets: list[str]
    models: list[str]
    seeds: list[Annotated[int, Field(ge=0, le=2**32 - 1)]]  # what torch and numpy accept
    arch: Literal["compact", "pythae"] = "compact"
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    slurm: SlurmConfig = SlurmConfig()  # only for --executor slurm; not part of any cell
    # epochs between a cell's rolling checkpoints (0: none), for resuming a killed cell where
    # it stopped; a setting of the run, not of any cell (`--checkpoint-every` overrides it).
    # (one after every epoch took 0.6% of the quick suite's time)
    checkpoint_every: int = Field(5, ge=0)

    def cells(self) -> list[RunConfig]:
        """Every dataset x model x seed of the suite, fully resolved."""
        return expand_cells(self)


def suite_config() -> type[_SuiteBase]:
    """The suite schema: one section per registered family, named after it (`betavae: {beta:
    4}`), for the families registered now (one registered later, by a plugin or a test, gets
    its section as well)."""
    return _suite_model(tuple(FAMILIES))


@functools.cache
def _suite_model(families: tuple[str, ...]) -> type[_SuiteBase]:
    sections = {
        name: (FAMILIES.get(name).params_model, FAMILIES.get(name).params_model())
        for name in families
    }
    return create_model("SuiteConfig", __base__=_SuiteBase, **sections)


def builtin_suites() -> list[str]:
    folder = resources.files("benchmark") / "suite_files"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_suite_file(suite: str) -> dict[str, Any]:
    path = Path(suite)
    if suite.endswith((".yaml", ".yml")) or path.exists():
        if not path.is_file():
            raise UserInputError(f"suite file not found: {suite}")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise UserInputError(f"suite file {suite} is not a UTF-8 text file") from None
        except OSError as error:
            raise UserInputError(f"cannot read suite file {suite}: {error.strerror}") from None
    elif suite in builtin_suites():
        text = (resources.files("benchmark") / "suite_files" / f"{suite}.yaml").read_text()
    else:
        raise unknown_name("suite", suite, builtin_suites())
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise UserInputError(f"suite {suite} is not valid YAML: {error}".splitlines()[0]) from None
    if not isinstance(values, dict):
        raise UserInputError(f"suite {suite} must be a YAML mapping")
    values.setdefault("name", path.stem if path.suffix else suite)
    return values


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=3` -> (["train", "epochs"], 3); values are YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserInputError(f"--set expects KEY=VALUE (like train.epochs=3), got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    return key.strip().split("."), value


def apply_override(values: dict[str, Any], path: list[str], value: Any) -> None:
    node = values
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserInputError(f"config key '{'.'.join(path)}': '{part}' is not a section")
        node = child
    node[path[-1]] = value


def resolve_suite(
    suite: str = "quick",
    overrides: list[str] | None = None,
    models: list[str] | None = None,
    datasets: list[str] | None = None,
    seeds: list[int] | None = None,
):
    values = read_suite_file(suite)
    for text in overrides or []:
        apply_override(values, *parse_override(text))
    if models:
        values["models"] = models
    if datasets:
        values["datasets"] = datasets
    if seeds:
        values["seeds"] = seeds
    resolved = validate(suite_config(), values)
    for model in resolved.models:
        FAMILIES.get(model)  # unknown model -> one line with a suggestion
        sampler_for(resolved.eval.sampler, model)
    for dataset in resolved.datasets:
        check_dataset_name(dataset)
    if not (resolved.models and resolved.datasets and resolved.seeds):
        raise UserInputError("a suite needs at least one dataset, one model and one seed")
    for kind, names in (
        ("model", resolved.models),
        ("dataset", resolved.datasets),
        ("seed", resolved.seeds),
    ):
        twice = sorted({str(n) for n in names if list(names).count(n) > 1})
        if twice:  # one cell would be trained once and counted twice
            raise UserInputError(
                f"{kind} {', '.join(twice)} given more than once: {kind}s are a set"
            )
    return resolved


def check_devices(suite) -> None:
    """`train.device=cuda` on a machine without CUDA: one line now, not a failure per cell
    after the data is loaded. (Only where the cells run here: SLURM nodes may have GPUs.)"""
    if suite.train.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserInputError(
                "train.device=cuda but this machine has no CUDA device (torch "
                f"{torch.__version__}); use train.device=auto or cpu"
            )


def sampler_for(choice: str | dict[str, str] | None, model: str) -> str:
    """The sampler a model's cells use: `eval.sampler` as a name, per model, or the default."""
    family = FAMILIES.get(model)
    if isinstance(choice, dict):
        for key in choice:
            FAMILIES.get(key)  # eval.sampler.betavea=gmm -> one line with a suggestion
        name, key = choice.get(model, family.samplers[0]), f"eval.sampler.{model}"
    else:
        name, key = (choice or family.samplers[0]), "eval.sampler"
    if name not in family.samplers:
        hint = "" if key != "eval.sampler" else f"; for some families only: {key}.MODEL=NAME"
        raise UserInputError(
            f"{key}={name}: {model} samples with {', '.join(family.samplers)} "
            f"(default {family.samplers[0]}){hint}"
        )
    return name


def expand_cells(suite) -> list[RunConfig]:
    return [
        RunConfig(
            suite=suite.name,
            dataset=dataset,
            model=model,
            seed=seed,
            arch=suite.arch,
            data=suite.data,
            train=suite.train,
            eval=suite.eval.model_copy(update={"sampler": sampler_for(suite.eval.sampler, model)}),
            params=getattr(suite, model).model_dump(mode="json"),
        )
        for dataset in suite.datasets
        for model in suite.models
        for seed in suite.seeds
    ]
