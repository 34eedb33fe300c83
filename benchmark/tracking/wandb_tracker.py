"""Weights & Biases, the default tracker: one run streamed per cell, its sweep agent, its runs as
a report's source (with `wandb_records.py`, the only modules that import wandb).

One W&B run per cell. Online when logged in, offline otherwise (upload later with
`wandb sync`), off on request. W&B never fails a cell: any error in it is reported once as a
warning and tracking stops for that cell, while training, evaluation and the local record go on.
Under a sweep agent the runner attaches to the run the agent started.

Step rows are sent in bursts (at each epoch end, or once the oldest unsent row is
`flush_seconds` old): every step still gets its own row, plotted against `trainer/step`, but a
`run.log` between two training steps costs ~1 ms on a busy 2-core CPU (a hand-off to wandb's
I/O thread while torch's threads hold the cores) against ~0.15 ms in a burst.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.tracking.base import Log, NullTracker, TrackerPlugin, flat_config, summary_values
from benchmark.tracking.wandb_records import (
    TRACKER,
    model_artifact_name,
    prune_superseded,
    update_run,
)

if TYPE_CHECKING:
    import argparse

    import torch

    from benchmark.config import RunConfig
    from benchmark.records.results import Record
    from benchmark.report.sources import ReportInputs

MODES = ("auto", "online", "offline", "off")
DEFAULT_PROJECT = "vaebench"


def in_sweep() -> bool:
    return bool(os.environ.get("WANDB_SWEEP_ID"))


def mark_preempting() -> bool:
    """Under a sweep agent, stopped by SIGTERM (a scheduler's preemption or time limit): ask W&B
    to requeue this run. The requeued run has the same id, hence the same results folder
    (`vaebench-runs/sweep-ID/RUN_ID`), and its cell continues from its rolling checkpoint."""
    if not in_sweep():
        return False
    import wandb

    if wandb.run is None:
        return False
    try:
        wandb.run.mark_preempting()
    except Exception:  # noqa: BLE001 - W&B must never turn a clean stop into a crash
        return False
    return True


def logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:  # wandb's own netrc reader; a private API, so any surprise means "not logged in"
        import wandb
        from wandb.sdk.lib.wbauth import wbnetrc

        host = os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
        return bool(wbnetrc.read_netrc_auth(host=host))
    except Exception:
        return False


SERVER_CHECK_S = 10.0  # once per suite: an unreachable server costs this, not a minute per cell


def server_reachable(timeout: float | None = None) -> tuple[bool, str]:
    """(reachable, why not): one TCP connection to the W&B server, DNS included, abandoned
    after `timeout` seconds (wandb.init itself would wait about a minute per run)."""
    from urllib.parse import urlparse

    timeout = SERVER_CHECK_S if timeout is None else timeout
    base_url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    parsed = urlparse(base_url)
    host, port = parsed.hostname or "", parsed.port or (80 if parsed.scheme == "http" else 443)
    outcome: dict[str, str] = {}

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["ok"] = ""
        except OSError as error:
            outcome["error"] = f"{host}: {error.strerror or type(error).__name__}"

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if "ok" in outcome:
        return True, ""
    return False, outcome.get("error", f"{host}: no answer within {timeout:g} s")


def resolve_mode(requested: str) -> tuple[str, str | None]:
    """(mode, a one-line notice or None). Never prompts."""
    env_mode = os.environ.get("WANDB_MODE", "").lower()
    if requested == "off" or env_mode in ("disabled", "off"):
        return "off", None
    if requested != "auto":
        return requested, None
    if env_mode in ("online", "offline"):
        return env_mode, None
    if in_sweep():
        return "online", None
    if logged_in():
        reachable, reason = server_reachable()
        if reachable:
            return "online", None
        return "offline", (
            f"W&B: logged in, but the server cannot be reached ({reason}); runs are logged "
            "offline (upload them later with `wandb sync`)"
        )
    return "offline", (
        "W&B: not logged in; runs are logged offline (upload them later with `wandb sync`)"
    )


def summary_directions() -> dict[str, str]:
    """W&B summary goal ("max" / "min") of every recon/ and gen/ key, from the registry."""
    from benchmark.metrics.registry import (
        METRICS,  # the registry imports torch: only once a run starts
    )

    return {
        prefix + key: "max" if info.higher_is_better else "min"
        for key, info in METRICS.items()
        for prefix in ("recon/", "gen/")
    }


class WandbTracker:
    def __init__(
        self,
        mode: str,
        project: str | None = None,
        entity: str | None = None,
        directory: str | None = None,
        log: Log = print,
        log_every: int = 1,
        flush_seconds: float = 10.0,
        artifacts: bool = False,
    ) -> None:
        self.mode = mode
        self.artifacts = artifacts  # the final checkpoint as a model artifact of the run
        self.project = project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.entity = entity
        self.directory = directory
        self.log = log
        self.run = None
        self.cell_id = ""
        self.log_every = max(1, log_every)  # thin the rows further on tiny, fast models
        self.flush_seconds = flush_seconds
        self._unsent: list[dict[str, float]] = []
        self._oldest_unsent = 0.0
        self.seconds = 0.0  # time spent in W&B calls, kept out of the cell's train/eval timings

    # -- every W&B call goes through here: a failure disables tracking for the cell --------
    def _guard(self, what: str, action: Callable[[], None]) -> None:
        if self.run is None and what != "init":
            return
        started = time.perf_counter()
        try:
            action()
        except Exception as error:  # noqa: BLE001 - W&B must never fail a cell
            self.log(
                f"W&B: {what} failed ({type(error).__name__}: {error}); "
                "this cell continues without tracking"
            )
            run, self.run = self.run, None
            if run is not None:  # close it, so that no later cell logs into it
                with contextlib.suppress(Exception):
                    run.finish(exit_code=1)
        finally:
            self.seconds += time.perf_counter() - started

    def start(self, config: RunConfig, environment: dict) -> None:
        self.cell_id = config.cell_id

        def init() -> None:
            import wandb

            if self.directory:
                os.makedirs(self.directory, exist_ok=True)
            # a sweep agent's run was attached by sweep_parameters; anything else is a new run
            run = wandb.run if in_sweep() else None
            if run is None:
                run = wandb.init(
                    project=self.project,
                    entity=self.entity,
                    dir=self.directory,
                    mode=self.mode,
                    name=config.cell_id,
                    group=f"{config.suite}/{config.dataset}",
                    job_type="benchmark",
                    tags=[config.suite, config.model, config.dataset],
                    reinit="finish_previous",
                    settings=wandb.Settings(silent=True, init_timeout=60, console="off"),
                )
            else:
                run.name = config.cell_id
                run.tags = tuple(sorted({*run.tags, config.suite, config.model, config.dataset}))
            self.run = run
            # a sweep has locked its parameters in the config: send only what is new
            existing = dict(run.config)
            flat = {k: v for k, v in flat_config(config).items() if existing.get(k, ...) != v}
            run.config.update(flat, allow_val_change=True)
            run.config.update(
                {
                    "env.git_sha": environment.get("git_sha"),
                    "env.device": environment.get("device"),
                    "env.hardware": environment.get("hardware"),
                    **{f"env.{k}": v for k, v in environment.get("packages", {}).items()},
                },
                allow_val_change=True,
            )
            run.define_metric("trainer/step")
            run.define_metric("trainer/epoch")
            for pattern in ("train/*", "lr/*", "perf/*"):
                run.define_metric(pattern, step_metric="trainer/step")
            run.define_metric("val/*", step_metric="trainer/epoch")
            for key, goal in summary_directions().items():
                run.define_metric(key, summary=goal)

        self._guard("init", init)

    def log_step(self, values: dict[str, float]) -> None:
        if self.run is None or int(values.get("trainer/step", 0)) % self.log_every:
            return
        if not self._unsent:
            self._oldest_unsent = time.monotonic()
        self._unsent.append(values)
        if time.monotonic() - self._oldest_unsent >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Send the buffered step rows, oldest first."""
        rows, self._unsent = self._unsent, []

        def send() -> None:
            for row in rows:
                self.run.log(row)

        if rows:
            self._guard("log", send)

    def log_epoch(self, summary: dict[str, float]) -> None:
        self.flush()
        values = {k: v for k, v in summary.items() if k.startswith("val/")}
        values["trainer/epoch"] = summary["epoch"]
        self._guard("log", lambda: self.run.log(values))

    def finish(
        self, record: Record, images: dict[str, torch.Tensor], checkpoint: Path | None = None
    ) -> None:
        def summarise() -> None:
            import wandb

            from benchmark.metrics.registry import METRICS

            run = self.run
            run.log({f"images/{key}": wandb.Image(grid) for key, grid in images.items()})
            rows = [
                [k, v, METRICS[k.split("/", 1)[1]].higher_is_better]
                for k, v in record.metrics.items()
            ]
            run.log(
                {
                    "metrics_table": wandb.Table(
                        columns=["key", "value", "higher_is_better"], data=rows
                    )
                }
            )
            run.summary.update(summary_values(record))
            run.summary.update(
                {
                    "status": record.status,
                    "error": record.error or "",
                    **{f"timings/{k}": v for k, v in record.timings.items()},
                }
            )

        self.flush()  # a cell that failed mid-epoch still streams the steps it made
        self._guard("summary", summarise)
        if self.artifacts and record.status == "ok" and checkpoint and checkpoint.exists():
            self._guard("artifact", lambda: self._log_model(record, checkpoint))
        exit_code = 0 if record.status == "ok" else 1
        self._guard("finish", lambda: self.run.finish(exit_code=exit_code))
        self.run = None

    def run_info(self) -> dict[str, str] | None:
        """The record's `tracker_run`: W&B, the run's path and mode (None when tracking is off
        or failed)."""
        if self.run is None:
            return None
        return {"tracker": TRACKER, "path": self.run.path, "mode": self.mode}

    def _log_model(self, record: Record, checkpoint: Path) -> None:
        """`model-CELL`, one artifact per cell: each retraining of the cell (a new config) is a
        new version, and the aliases `latest`, the cell's id and `config-HASH` move to it. The
        versions left without an alias are the superseded ones: online, they are deleted, as
        W&B documents for keeping only the versions in use (soft delete, then its garbage
        collection); offline runs leave that to the next online one."""
        import wandb

        from benchmark.environment import code_version

        cell = self.cell_id
        artifact = wandb.Artifact(
            model_artifact_name(cell),
            type="model",
            description=f"{record.model} trained on {record.dataset}, seed "
            f"{record.seed} (vaebench suite {record.suite}): safetensors state dict with "
            "its resolved config in the file's metadata",
            metadata={
                "format": "safetensors",
                "suite": record.suite,
                "model": record.model,
                "dataset": record.dataset,
                "seed": record.seed,
                "config_hash": record.config_hash,
                "code": code_version(),
                "metrics": record.metrics,
            },
        )
        artifact.add_file(str(checkpoint), name=f"{cell}{checkpoint.suffix}")
        aliases = ["latest", cell, f"config-{record.config_hash}"]
        logged = self.run.log_artifact(artifact, aliases=aliases)
        if self.mode == "online":
            logged.wait()
            prune_superseded(self.run, model_artifact_name(cell), self.log)


def make_tracker_factory(
    requested: str,
    project: str | None,
    entity: str | None,
    directory: str | None,
    log: Log,
    log_every: int = 1,
    artifacts: bool = False,
) -> Callable[[], Any]:
    mode, notice = resolve_mode(requested)
    if notice:
        log(notice)
    if mode == "off":
        if artifacts:
            log("--wandb-artifacts: W&B is off, no artifacts are logged")
        return NullTracker
    return lambda: WandbTracker(
        mode, project, entity, directory, log, log_every, artifacts=artifacts
    )


def sweep_parameters() -> dict[str, Any]:
    """Under a sweep agent: attach to the agent's run and return its parameters (wandb.config)."""
    import wandb

    run = wandb.run or wandb.init(settings=wandb.Settings(silent=True, console="off"))
    return {k: v for k, v in dict(run.config).items() if not k.startswith("_")}


class WandbPlugin(TrackerPlugin):
    name = TRACKER
    help = "Weights & Biases, online when logged in, else offline (--wandb MODE)"
    requires = (("wandb", "wandb"),)

    def add_run_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--wandb",
            choices=list(MODES),
            default="auto",
            help="W&B tracking: online when logged in, else offline [auto]",
        )
        parser.add_argument("--wandb-project", help="W&B project [$WANDB_PROJECT or vaebench]")
        parser.add_argument("--wandb-entity", help="W&B entity (user or team)")
        parser.add_argument(
            "--wandb-log-every",
            type=int,
            default=1,
            metavar="N",
            help="stream every Nth training step to W&B (the .steps.csv beside each "
            "record keeps all of them) [1]",
        )
        parser.add_argument(
            "--wandb-artifacts",
            action="store_true",
            help="log each cell's final checkpoint as a W&B model artifact of its run",
        )

    def required(self, args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
        # `--wandb off` imports no wandb at all (seconds of import: 0.6 s of a one-cell run)
        return () if args.wandb == "off" else self.requires

    def check_run_options(self, args: argparse.Namespace) -> None:
        from benchmark.errors import UserInputError

        if args.wandb_log_every < 1:
            raise UserInputError("--wandb-log-every must be at least 1")

    def tracker_factory(self, args: argparse.Namespace, out: Path, log: Log):
        return make_tracker_factory(
            args.wandb,
            args.wandb_project,
            args.wandb_entity,
            str(out),
            log,
            args.wandb_log_every,
            artifacts=args.wandb_artifacts,
        )

    def update_run(self, record: Record, log: Log) -> bool:
        return update_run(record, log)

    def in_agent(self) -> bool:
        return in_sweep()

    def agent_parameters(self, args: argparse.Namespace) -> dict[str, Any]:
        # `--wandb off` under an agent: its ${args} on the command line are all there is
        return {} if getattr(args, "wandb", "auto") == "off" else sweep_parameters()

    def agent_folder(self) -> str | None:
        run_id = os.environ.get("WANDB_RUN_ID", "run")
        return f"sweep-{os.environ['WANDB_SWEEP_ID']}/{run_id}"

    def mark_preempting(self) -> bool:
        return mark_preempting()

    def add_report_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="build from W&B runs instead")
        parser.add_argument("--group", help="with --wandb: only this run group (SUITE/DATASET)")
        parser.add_argument("--tag", help="with --wandb: only runs with this tag")

    def report_source(self, args: argparse.Namespace) -> Callable[[], ReportInputs] | None:
        if not args.wandb:
            return None
        # reading runs back needs the record model, pandas and the report: not at parser build
        from benchmark.tracking.wandb_report import from_wandb

        return lambda: from_wandb(args.wandb, args.group, args.tag)


PLUGIN = WandbPlugin()
