"""MLflow as a tracker (`vaebench run --tracker mlflow`, the optional extra `vaebench[mlflow]`):
one MLflow run per cell, through `MlflowClient` (explicit run ids, no global active run, so
`--jobs` workers and SLURM jobs never share state).

- where: `--mlflow-uri` (a tracking server `http://HOST:PORT`, or any store URI MLflow takes),
  else `$MLFLOW_TRACKING_URI`, else a local sqlite store `OUT/mlflow.db` with its artifacts in
  `OUT/mlartifacts` (MLflow 3 keeps its plain-file store in maintenance mode; sqlite is the
  local store it recommends: `mlflow ui --backend-store-uri sqlite:///OUT/mlflow.db`);
- what: the flat config as params (`train.epochs`, `betavae.beta`, as sweeps and `--set` spell
  them) and the environment as `env.*` params; tags suite, model, dataset, config hash, status;
  every training step's components at their step, validation losses at their epoch (sent in
  batches, at each epoch end or once the oldest row is `flush_seconds` old); the record's
  metrics and timings at step 0 and the reasons for unavailable metrics as tags; the image
  grids and the checkpoint as artifacts (not the record's JSON: a local store lives inside
  --out, where every JSON file that is a record counts as one);
- after a re-score (`update_run`): the new metrics (logged later, so MLflow shows them as the
  latest values), new params, and tags `config.KEY` for a setting whose param MLflow cannot
  change any more (its params are write-once).

MLflow never fails a cell: any error is one line, and tracking stops for that cell.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.tracking.base import Log, TrackerPlugin, flat_config, summary_values

if TYPE_CHECKING:
    import argparse

    import torch

    from benchmark.config import RunConfig
    from benchmark.records.results import Record

TRACKER = "mlflow"  # how a record's `tracker_run` names this tracker
DEFAULT_EXPERIMENT = "vaebench"
BATCH_METRICS = 1000  # MLflow's limit per log_batch call
BATCH_PARAMS = 100  # likewise for params
PARAM_CHARS = 6000  # MLflow's longest param value


def local_store(out: Path) -> tuple[str, str]:
    """(tracking URI, artifact root) of the store kept inside the run's --out folder."""
    out = Path(out).resolve()
    return f"sqlite:///{out / 'mlflow.db'}", (out / "mlartifacts").as_uri()


SERVER_CHECK_S = 10.0  # once per run: an unreachable server is one line, not minutes of retries


def check_server(uri: str, timeout: float = SERVER_CHECK_S) -> None:
    """A tracking server that does not answer: one line, exit 2, before any work (MLflow's
    client would retry each call for minutes, in every cell)."""
    from urllib.parse import urlparse

    from benchmark.errors import UserInputError

    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return  # a store URI (sqlite:, postgresql:, ...): MLflow opens it itself
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout=timeout).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserInputError(
            f"--tracker mlflow: the MLflow tracking server {uri} cannot be reached ({reason}); "
            "start it, or leave --mlflow-uri out to log to a local store in --out"
        ) from None


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def _quiet_store_set_up():
    """A new sqlite store logs its table creation and migrations at INFO, once per process
    (lines between a cell's own); only for the block, their loggers at WARNING."""
    import logging

    loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _quietly(action: Callable[[], Any]) -> Any:
    """MLflow prints "View run ... at" lines to stdout when a run ends; the run's place is in
    the record (`tracker_run`) and in the line said when the run starts."""
    with contextlib.redirect_stdout(io.StringIO()):
        return action()


def _params(values: dict[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(key, str(value)[:PARAM_CHARS]) for key, value in values.items()]


def _log_batch(client, run_id: str, metrics=(), params=(), tags=()) -> None:
    metrics, params, tags = list(metrics), list(params), list(tags)
    while metrics or params or tags:
        client.log_batch(
            run_id, metrics=metrics[:BATCH_METRICS], params=params[:BATCH_PARAMS], tags=tags
        )
        metrics, params, tags = metrics[BATCH_METRICS:], params[BATCH_PARAMS:], []


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _png(grid: torch.Tensor):
    """A grid as `torchvision.utils.save_image` writes it: HWC uint8."""
    import torch

    return grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()


class MlflowTracker:
    def __init__(
        self,
        uri: str,
        experiment: str,
        artifact_root: str | None,
        log: Log = print,
        flush_seconds: float = 10.0,
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        self.artifact_root = artifact_root  # where a new experiment keeps artifacts (local store)
        self.log = log
        self.flush_seconds = flush_seconds
        self.client = None
        self.run_id: str | None = None
        self.experiment_id = ""
        self._unsent: list = []
        self._oldest_unsent = 0.0
        self.seconds = 0.0  # time spent in MLflow calls, kept out of the cell's timings

    # -- every MLflow call goes through here: a failure disables tracking for the cell -----
    def _guard(self, what: str, action: Callable[[], None]) -> None:
        if self.run_id is None and what != "start":
            return
        started = time.perf_counter()
        try:
            action()
        except Exception as error:  # noqa: BLE001 - MLflow must never fail a cell
            first = str(error).strip().splitlines()
            self.log(
                f"MLflow: {what} failed ({type(error).__name__}: {first[0] if first else ''}); "
                "this cell continues without tracking"
            )
            run_id, self.run_id = self.run_id, None
            if run_id is not None:
                with contextlib.suppress(Exception):
                    _quietly(lambda: self.client.set_terminated(run_id, "FAILED"))
        finally:
            self.seconds += time.perf_counter() - started

    def start(self, config: RunConfig, environment: dict) -> None:
        def start() -> None:
            with _quiet_store_set_up():  # the store is made on the client's first call
                self.client = _client(self.uri)
                found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                self.experiment_id = found.experiment_id
            else:
                with contextlib.suppress(Exception):  # created meanwhile by another worker
                    self.client.create_experiment(self.experiment, self.artifact_root)
                self.experiment_id = self.client.get_experiment_by_name(
                    self.experiment
                ).experiment_id
            run = self.client.create_run(
                self.experiment_id,
                run_name=config.cell_id,
                tags={
                    "suite": config.suite,
                    "model": config.model,
                    "dataset": config.dataset,
                    "seed": str(config.seed),
                    "config_hash": config.config_hash(),
                },
            )
            self.run_id = run.info.run_id
            env = {
                "env.git_sha": environment.get("git_sha"),
                "env.device": environment.get("device"),
                **{f"env.{k}": v for k, v in environment.get("packages", {}).items()},
            }
            params = {**flat_config(config), **env}
            params.pop("config_hash")  # a tag: it changes when a re-score changes eval settings
            _log_batch(self.client, self.run_id, params=_params(params))

        self._guard("start", start)

    def log_step(self, values: dict[str, float]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        step = int(values.get("trainer/step", 0))
        stamp = int(time.time() * 1000)
        if not self._unsent:
            self._oldest_unsent = time.monotonic()
        self._unsent += [
            Metric(key, float(value), stamp, step)
            for key, value in values.items()
            if key != "trainer/step"
        ]
        if time.monotonic() - self._oldest_unsent >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        rows, self._unsent = self._unsent, []
        if rows:
            self._guard("log", lambda: _log_batch(self.client, self.run_id, metrics=rows))

    def log_epoch(self, summary: dict[str, float]) -> None:
        self.flush()
        values = {k: v for k, v in summary.items() if k.startswith("val/")}
        if values:
            step = int(summary["epoch"])
            self._guard("log", lambda: self._log_values(values, step))

    def _log_values(self, values: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, v in _numbers(values).items()]
        _log_batch(self.client, self.run_id, metrics=metrics)

    def _log_record(self, record: Record) -> None:
        """The record's numbers at step 0, and what they need said as tags."""
        from mlflow.entities import RunTag

        summary = summary_values(record)
        numbers = _numbers({k: v for k, v in summary.items() if "/" in k and k in record.metrics})
        numbers.update({f"timings/{k}": v for k, v in _numbers(record.timings).items()})
        self._log_values(numbers, 0)
        tags = {"status": record.status, "error": (record.error or "")[:5000]}
        tags.update({f"unavailable/{k}": why[:5000] for k, why in record.unavailable.items()})
        tags["config_hash"] = record.config_hash
        _log_batch(self.client, self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def finish(
        self, record: Record, images: dict[str, torch.Tensor], checkpoint: Path | None = None
    ) -> None:
        self.flush()  # a cell that failed mid-epoch still streams the steps it made

        def summarise() -> None:
            self._log_record(record)
            for name, grid in images.items():
                self.client.log_image(self.run_id, _png(grid), artifact_file=f"images/{name}.png")

        self._guard("summary", summarise)
        if record.status == "ok" and checkpoint and checkpoint.exists():
            self._guard(
                "artifact",
                lambda: self.client.log_artifact(self.run_id, str(checkpoint), "checkpoint"),
            )
        status = "FINISHED" if record.status == "ok" else "FAILED"
        self._guard(
            "finish", lambda: _quietly(lambda: self.client.set_terminated(self.run_id, status))
        )

    def run_info(self) -> dict[str, str] | None:
        """The record's `tracker_run`: MLflow, the run id, the store, its experiment."""
        if self.run_id is None:
            return None
        mode = "server" if self.uri.startswith(("http://", "https://")) else "local"
        return {
            "tracker": TRACKER,
            "path": self.run_id,
            "mode": mode,
            "uri": self.uri,
            "experiment": self.experiment_id,
        }


def update_run(record: Record, log: Log) -> bool:
    """After a re-score: the record's MLflow run gets the new metrics, params MLflow can still
    take, and tags for those it cannot change. A failure is one line; the
    local record stands either way."""
    where = record.tracker_run
    if not where or where.get("tracker") != TRACKER or not where.get("uri"):
        return False
    try:
        from mlflow.entities import RunTag

        client = _client(where["uri"])
        tracker = MlflowTracker(where["uri"], "", None, log)
        tracker.client, tracker.run_id = client, where["path"]
        logged = client.get_run(tracker.run_id).data.params
        flat = flat_config(record.config)
        flat.pop("config_hash")
        new = {k: v for k, v in flat.items() if k not in logged}
        changed = {
            k: v for k, v in flat.items() if k in logged and logged[k] != str(v)[:PARAM_CHARS]
        }
        _log_batch(
            client,
            tracker.run_id,
            params=_params(new),
            tags=[RunTag(f"config.{k}", str(v)) for k, v in changed.items()],
        )
        tracker._log_record(record)
    except Exception as error:  # noqa: BLE001 - MLflow must never fail a re-score
        first = str(error).strip().splitlines()
        log(
            f"MLflow: run {where.get('path')} not updated "
            f"({type(error).__name__}: {first[0] if first else ''})"
        )
        return False
    return True


class MlflowPlugin(TrackerPlugin):
    name = TRACKER
    help = "MLflow, a tracking server (--mlflow-uri) or a local sqlite store in --out"
    requires = (("mlflow", "vaebench[mlflow]"),)

    def add_run_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--mlflow-uri",
            metavar="URI",
            help="with --tracker mlflow: tracking server (http://127.0.0.1:5000) or store URI "
            "[$MLFLOW_TRACKING_URI, else sqlite OUT/mlflow.db]",
        )
        parser.add_argument(
            "--mlflow-experiment",
            metavar="NAME",
            help=f"with --tracker mlflow: experiment [$MLFLOW_EXPERIMENT_NAME or "
            f"{DEFAULT_EXPERIMENT}]",
        )

    def check_run_options(self, args: argparse.Namespace) -> None:
        """An empty experiment name (an unset shell variable) is one line, not the default in
        silence; a server that does not answer is one line, before any work or a dry run."""
        from benchmark.errors import UserInputError

        if args.mlflow_experiment is not None and not args.mlflow_experiment.strip():
            raise UserInputError("--mlflow-experiment is empty: give an experiment name")
        uri = _named_uri(args)
        if uri:
            check_server(uri)

    def tracker_factory(self, args: argparse.Namespace, out: Path, log: Log):
        uri, artifact_root = _named_uri(args), None
        if not uri:
            uri, artifact_root = local_store(out)
        experiment = (
            args.mlflow_experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        )
        log(f"MLflow: one run per cell in experiment '{experiment}' at {uri}")
        return lambda: MlflowTracker(uri, experiment, artifact_root, log)

    def update_run(self, record: Record, log: Log) -> bool:
        return update_run(record, log)


def _named_uri(args: argparse.Namespace) -> str | None:
    """--mlflow-uri, else $MLFLOW_TRACKING_URI; None: the local store inside --out."""
    return args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


PLUGIN = MlflowPlugin()
