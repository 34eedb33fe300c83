"""`vaebench perf`'s training rows: images/s of pythae's stock `TrainingPipeline` against our
runner on the same networks, data, batch size and hyper-parameters (and whether their first
losses agree), and our runner with each speed option against fp32. In one process,
interleaved, after a warm-up, median of `repeats`.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmark.data import ImageSplits
from benchmark.models import FAMILIES, Family
from benchmark.pythae_compat import quiet_pythae
from benchmark.training import StepRecorder, resolve_device, train

Log = Callable[[str], None]

# Speed options of the runner (train config changes), each timed against stock pythae in the
# same interleaved loop; bf16 and NHWC round differently, so their losses are close, not equal.
SPEED_OPTIONS: dict[str, dict[str, Any]] = {
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "bf16 + channels_last": {"precision": "bf16", "channels_last": True},
}


def _seconds(run: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    run(*args)
    return time.perf_counter() - started


def _median_time(run: Callable[[], Any], repeats: int) -> float:
    return statistics.median(_seconds(run) for _ in range(repeats))


def _stock_pipeline(family: Family, cell, params, data: ImageSplits) -> list[dict]:
    """pythae's own TrainingPipeline; returns its per-step losses (observed by a hook)."""
    from pythae.pipelines import TrainingPipeline

    torch.manual_seed(cell.seed)
    model = family.build(params, data.shape, cell.arch)
    with tempfile.TemporaryDirectory() as workdir:
        device = resolve_device(cell.train.device)
        config = family.trainer_config(params, cell.train, cell.seed, workdir, device)
        recorder = StepRecorder(family.train_components)
        pipeline = TrainingPipeline(model=model, training_config=config)
        handle = model.register_forward_hook(recorder)
        try:
            with contextlib.redirect_stderr(io.StringIO()), quiet_pythae():
                pipeline(
                    train_data=data.train.float().div(255),
                    eval_data=data.val.float().div(255) if len(data.val) else None,
                )
        finally:
            handle.remove()
    return recorder.history.steps[1:]  # the first call is the pipeline's sanity check


def _ours(family: Family, cell, params, data: ImageSplits) -> list[dict]:
    torch.manual_seed(cell.seed)
    model = family.build(params, data.shape, cell.arch)
    return train(family, model, data, cell, params).steps


def _with_train(cell, changes: dict[str, Any]):
    return cell.model_copy(update={"train": cell.train.model_copy(update=changes)})


def _max_loss_deviation(reference: list[dict], other: list[dict]) -> float:
    """Largest relative difference of the total loss, step by step. (Components near zero, such
    as an early KL term, differ by more in relative terms without mattering.)"""
    return max(
        abs(b["train/loss"] - a["train/loss"]) / abs(a["train/loss"])
        for a, b in zip(reference, other, strict=True)
    )


def _option_result(ours_rate: float, stock_rate: float, rate: float, deviation: float) -> dict:
    return {
        "images_per_s": rate,
        "ratio_to_stock": rate / stock_rate,
        "ratio_to_fp32": rate / ours_rate,
        # said in the table: the defaults stay fp32, so an option never slows a default run
        "slower_than_fp32": rate < ours_rate,
        "max_loss_deviation_first_steps": deviation,
        "error": None,
    }


def training_throughput(cells, data: ImageSplits, repeats: int, log: Log) -> dict[str, dict]:
    """Stock pythae vs ours vs ours with each speed option, per family. An option that fails on
    this device (for example bf16 where the device has no bf16) gets its own row, with the
    error, and is left out of the timing; the defaults are never allowed to fail quietly."""
    results = {}
    for cell in cells:
        family = FAMILIES.get(cell.model)
        params = family.params_model(**cell.params)
        images = len(data.train) * cell.train.epochs
        variants = {"ours": cell} | {
            name: _with_train(cell, changes) for name, changes in SPEED_OPTIONS.items()
        }
        stock_steps = _stock_pipeline(family, cell, params, data)  # warm-up (and losses)
        steps, errors = {}, {}
        for name, variant in variants.items():  # warm-up (and losses)
            try:
                steps[name] = _ours(family, variant, params, data)
            except Exception as error:  # noqa: BLE001 - reported in the option's row
                if name == "ours":
                    raise
                errors[name] = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
                log(f"perf: train {cell.model} {name}: FAILED: {errors[name]}")
        timed = {name: variants[name] for name in steps}
        times: dict[str, list[float]] = {"stock": [], **{name: [] for name in timed}}
        for _ in range(repeats):  # interleaved
            times["stock"].append(_seconds(_stock_pipeline, family, cell, params, data))
            for name, variant in timed.items():
                times[name].append(_seconds(_ours, family, variant, params, data))
        rate = {name: images / statistics.median(t) for name, t in times.items()}
        stock, ours = rate["stock"], rate["ours"]
        first = min(5, len(steps["ours"]))
        options = {}
        for name in SPEED_OPTIONS:
            if name in errors:
                options[name] = {"error": errors[name]}
                continue
            deviation = _max_loss_deviation(steps["ours"][:first], steps[name][:first])
            options[name] = _option_result(ours, stock, rate[name], deviation)
        results[cell.model] = {
            "stock_images_per_s": stock,
            "ours_images_per_s": ours,
            "ratio": ours / stock,
            "same_losses_first_steps": stock_steps[:first] == steps["ours"][:first],
            "options": options,
        }
        shown = ", ".join(
            f"{name} FAILED"
            if option.get("error")
            else f"{name} x{option['ratio_to_stock']:.2f}"
            + (" (slower than fp32)" if option["slower_than_fp32"] else "")
            for name, option in options.items()
        )
        log(
            f"perf: train {cell.model}: stock {stock:.0f} img/s, ours {ours:.0f} img/s "
            f"(x{ours / stock:.2f}); {shown}"
        )
    return results
