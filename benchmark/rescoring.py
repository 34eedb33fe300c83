"""`vaebench evaluate OUT`: re-score finished cells from their checkpoints, without retraining.

Each ok record with a checkpoint beside it is rebuilt (same config, same weights, same data),
scored by the very function a run uses (`runner.score`), and updated in place: the chosen
metrics (all by default), their unavailability reasons, the sampler and FID settings, and each
recomputed metric's provenance (when, which code version). The config and its hash do not
change, so `vaebench run` still sees the cell as finished.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from benchmark.checkpoints import CheckpointError, load_checkpoint
from benchmark.claims import try_claim
from benchmark.environment import code_version
from benchmark.errors import UserInputError, unknown_name
from benchmark.metrics import METRICS
from benchmark.results import (
    CHECKPOINT_SUFFIX,
    Record,
    iter_records,
    now_iso,
    warn_on_stderr,
    write_record,
)
from benchmark.runner import MetricNetworks, SharedResources, score
from benchmark.training import resolve_device

Log = Callable[[str], None]
SETS = ("recon/", "gen/")


def parse_metric_names(names: list[str] | None) -> set[str] | None:
    """`fid`, `gen/kid`, `recon/mse` -> the set of record keys; None: every metric."""
    if not names:
        return None
    keys = set()
    for name in names:
        prefix, _, metric = name.rpartition("/")
        if metric not in METRICS:
            raise unknown_name("metric", metric, list(METRICS))
        if prefix and f"{prefix}/" not in SETS:
            raise UserInputError(f"unknown evaluation set '{prefix}/' in '{name}': recon/ or gen/")
        keys |= {name} if prefix else {p + metric for p in SETS}
    return keys


def rescore(
    out_dir: Path,
    metrics: list[str] | None = None,
    mirror: str | None = None,
    log: Log = print,
    networks: MetricNetworks | None = None,
) -> list[dict]:
    """Re-score every ok cell under `out_dir` that has a checkpoint; returns the updated
    records. Cells without a checkpoint, of another config, or being trained are left alone."""
    wanted = parse_metric_names(metrics)
    shared = SharedResources(mirror, networks or MetricNetworks())
    updated = []
    for path, record in iter_records(out_dir, warn_on_stderr):
        cell = path.name[: -len(".json")]
        checkpoint = path.with_suffix(CHECKPOINT_SUFFIX)
        if record["status"] != "ok":
            continue
        if not checkpoint.exists():
            log(f"{cell}: no checkpoint beside the record; kept as it is")
            continue
        claim = try_claim(path)
        if claim is None:
            log(f"{cell}: being trained by another runner; left to it")
            continue
        try:
            updated.append(_rescore_one(path, record, checkpoint, wanted, shared, log))
        except CheckpointError as error:
            log(f"{cell}: {error}; kept as it is")
        finally:
            claim.release()
    return [r for r in updated if r is not None]


def _rescore_one(path, record, checkpoint, wanted, shared, log) -> dict | None:
    cell = path.name[: -len(".json")]
    device = resolve_device(record["config"]["train"]["device"])
    model, config, params = load_checkpoint(checkpoint, device)
    if config.config_hash() != record["config_hash"]:
        log(f"{cell}: the checkpoint is of another config ({config.config_hash()}); kept as it is")
        return None
    # asking for a metric computes it, even where the run had it switched off (eval.fid: false)
    switches = {}
    if wanted is not None:
        switches = {
            "lpips": config.eval.lpips or any(k.endswith("/lpips") for k in wanted),
            "fid": config.eval.fid or any(k.endswith(("/fid", "/kid")) for k in wanted),
        }
    scoring = config.model_copy(update={"eval": config.eval.model_copy(update=switches)})
    scores = score(scoring, model, params, shared.data(config), shared, device)
    chosen = set(scores.metrics) | set(scores.unavailable)
    if wanted is not None:
        chosen &= wanted
    stamp = {"at": now_iso(), "code": code_version()}
    for key in sorted(chosen):
        if key in scores.metrics:
            record["metrics"][key] = float(scores.metrics[key])
            record["unavailable"].pop(key, None)
            record["provenance"][key] = dict(stamp)
        else:
            record["metrics"].pop(key, None)
            record["unavailable"][key] = scores.unavailable[key]
            record["provenance"].pop(key, None)
    if any(k.startswith("gen/") for k in chosen):
        record["sampler"] = scores.sampler
    if any(k.endswith(("/fid", "/kid")) and k in scores.metrics for k in chosen):
        record["distribution"] = scores.distribution
    record = Record.parse(record, str(path)).as_dict()
    write_record(path, record)
    shown = [k for k in sorted(chosen) if k in record["metrics"]]
    values = ", ".join(f"{k} {record['metrics'][k]:.4g}" for k in shown[:4])
    more = f", ... ({len(shown) - 4} more)" if len(shown) > 4 else ""
    log(f"{cell}: re-scored {len(chosen)} metrics ({values + more if shown else 'none available'})")
    return record
