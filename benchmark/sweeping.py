"""W&B sweep files: validation, and a local sweep runner that needs no W&B server.

`vaebench sweep FILE --count N` proposes trials with the open-source `sweeps` package (the
engine W&B's server runs: grid, random, bayes) and runs each through exactly the command a
`wandb agent` would run: the file's `command` with `${args}` and friends expanded.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from benchmark import files
from benchmark.errors import UserInputError, one_line
from benchmark.results import Record, load_records

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
SELECTIONS = ("models", "datasets", "seeds")


def _sweeps():
    """`sweeps` 0.2 declares pydantic-1 style config keys; pydantic 2 warns about it on import."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
    return sweeps


def load_sweep(path: str | Path) -> dict[str, Any]:
    sweeps = _sweeps()

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"sweep file not found: {path}")
    try:
        config = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserInputError(f"{path} is not a UTF-8 text file") from None
    except yaml.YAMLError as error:
        raise UserInputError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise UserInputError(f"{path} must be a YAML mapping")
    _check_shape(path, config)
    try:  # the engine's schema, then its own first proposal (it checks what the schema does not)
        violations = sweeps.schema_violations_from_proposed_config(config)
        if not violations:
            sweeps.next_run(config, [], validate=True)
    except Exception as error:  # noqa: BLE001 - the engine raises its own and builtin types
        raise UserInputError(f"{path} is not a valid W&B sweep: {one_line(error)}") from None
    if violations:
        raise UserInputError(f"{path} is not a valid W&B sweep: {violations[0]}")
    return config


def _check_shape(path: Path, config: dict[str, Any]) -> None:
    """What the engine would trip over with a stack trace: one line each."""
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise UserInputError(
            f"{path}: 'parameters' must be a mapping of parameter names to their settings "
            "(value:, values: or distribution:)"
        )
    for name, settings in parameters.items():
        if not isinstance(settings, dict):
            raise UserInputError(
                f"{path}: parameter '{name}' must be a mapping (value:, values: or distribution:)"
            )
    command = config.get("command")
    if command is not None and not (
        isinstance(command, list) and all(isinstance(part, str) for part in command)
    ):
        raise UserInputError(f"{path}: 'command' must be a list of strings")


def expand_command(config: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The agent's macro expansion of a sweep `command`."""

    def text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value)

    macros = {
        "${env}": ["/usr/bin/env"],
        "${interpreter}": [sys.executable],
        "${program}": [config.get("program", "")],
        "${args}": [f"--{k}={text(v)}" for k, v in params.items()],
        "${args_no_equals}": [part for k, v in params.items() for part in (f"--{k}", text(v))],
        "${args_no_hyphens}": [f"{k}={text(v)}" for k, v in params.items()],
        "${args_json}": [json.dumps(params)],
        "${args_json_file}": [],
    }
    command = []
    for part in config.get("command") or DEFAULT_COMMAND:
        command += macros.get(part, [part])
    return [part for part in command if part != ""]


def trial_metric(records: list[Record], name: str | None) -> float | None:
    values = [r.metrics[name] for r in records if name and name in r.metrics]
    return sum(values) / len(values) if values else None


def run_local_sweep(
    path: str | Path,
    count: int,
    out: Path,
    log: Callable[[str], None] = print,
    env: dict[str, str] | None = None,
) -> list[dict]:
    """Run up to `count` trials; trial k writes under OUT/trial-k. Returns one summary per trial."""
    sweeps = _sweeps()

    config = load_sweep(path)
    metric = (config.get("metric") or {}).get("name")
    history: list[sweeps.SweepRun] = []
    trials = []
    for index in range(count):
        proposal = sweeps.next_run(config, history, validate=True)
        if proposal is None:
            log(f"sweep: the {config['method']} search is exhausted after {index} trials")
            break
        params = {k: _plain(v["value"]) for k, v in proposal.config.items()}
        command = expand_command(config, params)
        trial_out = out / f"trial-{index}"
        log(f"sweep: trial {index}: {' '.join(shlex.quote(c) for c in command)}")
        trial_env = {**os.environ, **(env or {}), "VAEBENCH_OUT": str(trial_out)}
        result = subprocess.run(command, env=trial_env, check=False)
        records = load_records(trial_out / "results") if (trial_out / "results").is_dir() else []
        value = trial_metric(records, metric)
        proposal.state = (
            sweeps.RunState.finished if result.returncode == 0 else (sweeps.RunState.failed)
        )
        proposal.summary_metrics = {metric: value} if metric and value is not None else {}
        history.append(proposal)
        trials.append(
            {
                "trial": index,
                "params": params,
                "exit_code": result.returncode,
                "metric": metric,
                "value": value,
                "out": str(trial_out),
            }
        )
        log(f"sweep: trial {index} exited {result.returncode}; {metric} = {value}")
    files.write_text(
        out / "sweep.json", json.dumps({"sweep": str(path), "trials": trials}, indent=2)
    )
    return trials


def _plain(value: Any) -> Any:
    """numpy scalars (bayes proposals) -> Python numbers."""
    return value.item() if hasattr(value, "item") else value


def overrides_from_args(tokens: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """`--train.epochs=3` / `--train.epochs 3` (a sweep's ${args} / ${args_no_equals}) ->
    `--set` overrides. Returns (overrides, selections for models/datasets/seeds)."""
    overrides: list[str] = []
    selections: dict[str, list[str]] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--") or len(token) == 2:
            raise UserInputError(f"unexpected argument '{token}'")
        key, sep, value = token[2:].partition("=")
        if not sep:
            if index + 1 >= len(tokens):
                raise UserInputError(f"argument '{token}' needs a value")
            value = tokens[index + 1]
            index += 1
        if key in SELECTIONS:
            selections[key] = [v for v in value.strip("[]").replace(" ", "").split(",") if v]
        elif "." in key:
            overrides.append(f"{key}={value}")
        else:
            raise UserInputError(
                f"unrecognized argument '{token}'; config keys are dotted, like --train.epochs=3"
            )
        index += 1
    return overrides, selections
