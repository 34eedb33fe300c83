"""W&B sweep files: validation, and a local sweep runner that needs no W&B server.

`vaebench sweep FILE --count N` proposes trials with the open-source `sweeps` package (the
engine W&B's server runs: grid, random, bayes) and runs each through exactly the command a
`wandb agent` would run: the file's `command` with `${args}` and friends expanded. Where the
trials run (processes here, SLURM jobs) is `trials.py`.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import yaml

from benchmark import files
from benchmark.errors import UserInputError, one_line
from benchmark.records.results import Record, load_records

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


class Trials(Protocol):
    """Where trials run (`trials.LocalTrials`, `trials.SlurmTrials`)."""

    poll_s: float

    def start(self, index: int, command: list[str], env: dict[str, str], out: Path) -> str: ...

    def ended(self) -> dict[int, Any]: ...  # index -> TrialEnd, for trials ended since last asked

    def stop(self) -> None: ...


def run_sweep(
    path: str | Path,
    count: int,
    out: Path,
    trials: Trials,
    parallel: int = 1,
    log: Callable[[str], None] = print,
    env: dict[str, str] | None = None,
) -> list[dict]:
    """Run up to `count` trials, at most `parallel` at once; trial k writes under OUT/trial-k.
    A trial's proposal sees the trials before it, running ones included (as W&B's server does
    for agents). Returns one summary per trial, also written to OUT/sweep.json; stopped
    (Ctrl-C, SIGTERM, a bad request), the running trials are stopped first."""
    sweeps = _sweeps()

    config = load_sweep(path)
    metric = (config.get("metric") or {}).get("name")
    history: list[sweeps.SweepRun] = []
    running: dict[int, tuple[sweeps.SweepRun, dict]] = {}
    summaries: dict[int, dict] = {}
    proposed = 0
    exhausted = False
    try:
        while running or (proposed < count and not exhausted):
            while proposed < count and len(running) < parallel:
                proposal = sweeps.next_run(config, history, validate=True)
                if proposal is None:
                    log(
                        f"sweep: the {config['method']} search is exhausted after {proposed} trials"
                    )
                    exhausted = True
                    break
                proposal.state = sweeps.RunState.running
                history.append(proposal)
                running[proposed] = (
                    proposal,
                    _start(proposed, proposal, config, out, trials, env, log),
                )
                proposed += 1
            ended = trials.ended()
            for index, end in sorted(ended.items()):
                proposal, summary = running.pop(index)
                summaries[index] = _finish(summary, proposal, end, metric, log)
            if running and not ended:
                time.sleep(trials.poll_s)
    except BaseException:
        trials.stop()
        raise
    finally:
        summary_file = {"sweep": str(path), "trials": [summaries[i] for i in sorted(summaries)]}
        files.write_text(out / "sweep.json", json.dumps(summary_file, indent=2))
    return [summaries[i] for i in sorted(summaries)]


def _start(index, proposal, config, out: Path, trials: Trials, env, log) -> dict:
    params = {k: _plain(v["value"]) for k, v in proposal.config.items()}
    command = expand_command(config, params)
    trial_out = (out / f"trial-{index}").resolve()
    log(f"sweep: trial {index}: {' '.join(shlex.quote(c) for c in command)}")
    where = trials.start(index, command, {**(env or {}), "VAEBENCH_OUT": str(trial_out)}, trial_out)
    log(f"sweep: trial {index} started ({where})")
    return {"trial": index, "params": params, "out": str(trial_out)}


def _finish(summary: dict, proposal, end, metric: str | None, log) -> dict:
    """A trial's summary once it has ended; its proposal told how it went (the metric the
    sweep optimises, averaged over the trial's cells)."""
    sweeps = _sweeps()
    results = Path(summary["out"]) / "results"
    value = trial_metric(load_records(results) if results.is_dir() else [], metric)
    proposal.state = sweeps.RunState.finished if end.exit_code == 0 else sweeps.RunState.failed
    proposal.summary_metrics = {metric: value} if metric and value is not None else {}
    how = f"exited {end.exit_code}" if end.exit_code is not None else f"failed: {end.error}"
    log(f"sweep: trial {summary['trial']} {how}; {metric} = {value}")
    return {
        **summary,
        "exit_code": end.exit_code,
        "error": end.error,
        "metric": metric,
        "value": value,
    }


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
