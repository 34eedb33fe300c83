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
from functools import partial
from typing import Any

import torch

from benchmark.data.loading import ImageSplits
from benchmark.errors import UserInputError
from benchmark.models import FAMILIES, Family
from benchmark.train.pythae_compat import quiet_pythae
from benchmark.train.training import StepRecorder, resolve_device, train

Log = Callable[[str], None]

# Speed options of the runner (train config changes), each timed against stock pythae in the
# same interleaved loop; bf16 and NHWC round differently, so their losses are close, not equal.
SPEED_OPTIONS: dict[str, dict[str, Any]] = {
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "bf16 + channels_last": {"precision": "bf16", "channels_last": True},
}
# the vaebench engine (benchmark/train/engine.py) in each of its modes; timed like a speed
# option, and per step at batch 4 (`step_costs`)
ENGINE_MODES: dict[str, dict[str, Any]] = {
    "engine": {"engine": "vaebench"},
    "engine + compile": {"engine": "vaebench", "compile": "default"},
    "engine + compile max-autotune-no-cudagraphs": {
        "engine": "vaebench",
        "compile": "max-autotune-no-cudagraphs",
    },
}


def engine_modes(compiles: list[str]) -> dict[str, dict[str, Any]]:
    """The engine modes whose train.compile is in `compiles` (`off`: eager)."""
    known = {changes.get("compile", "off"): name for name, changes in ENGINE_MODES.items()}
    unknown = [c for c in compiles if c not in known]
    if unknown:
        raise UserInputError(
            f"--engine-modes: unknown mode {unknown[0]!r}; choose from {', '.join(known)}"
        )
    return {known[c]: ENGINE_MODES[known[c]] for c in compiles}


# the launch-bound regime: with batches this small, a step's fixed cost is most of it
STEP_COST_BATCH = 4
STEP_COST_IMAGES = 256


def _seconds(run: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    run(*args)
    return time.perf_counter() - started


def _median_time(run: Callable[[], Any], repeats: int) -> float:
    return statistics.median(_seconds(run) for _ in range(repeats))


def _stock_pipeline(family: Family, cell, params, data: ImageSplits, on_step=None) -> list[dict]:
    """pythae's own TrainingPipeline; returns its per-step losses (observed by a hook, which
    also calls `on_step(step, batch, time)`)."""
    from pythae.pipelines import TrainingPipeline

    torch.manual_seed(cell.seed)
    model = family.build(params, data.shape, cell.arch)
    with tempfile.TemporaryDirectory() as workdir:
        device = resolve_device(cell.train.device)
        config = family.trainer_config(params, cell.train, cell.seed, workdir, device)
        recorder = StepRecorder(family.train_components, on_step)
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


def _ours(family: Family, cell, params, data: ImageSplits, on_step=None) -> list[dict]:
    torch.manual_seed(cell.seed)
    model = family.build(params, data.shape, cell.arch)
    return train(family, model, data, cell, params, on_step=on_step).steps


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


def training_throughput(
    cells, data: ImageSplits, repeats: int, log: Log, options: dict[str, dict] | None = None
) -> dict[str, dict]:
    """Stock pythae vs ours vs ours with each speed option, per family. An option that fails on
    this device (for example bf16 where the device has no bf16) gets its own row, with the
    error, and is left out of the timing; the defaults are never allowed to fail quietly."""
    results = {}
    for cell in cells:
        family = FAMILIES.get(cell.model)
        params = family.params_model(**cell.params)
        images = len(data.train) * cell.train.epochs
        options = SPEED_OPTIONS | ENGINE_MODES if options is None else options
        variants = {"ours": cell} | {
            name: _with_train(cell, changes) for name, changes in options.items()
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
        rows = {}
        for name in options:
            if name in errors:
                rows[name] = {"error": errors[name]}
                continue
            deviation = _max_loss_deviation(steps["ours"][:first], steps[name][:first])
            rows[name] = _option_result(ours, stock, rate[name], deviation)
        results[cell.model] = {
            "stock_images_per_s": stock,
            "ours_images_per_s": ours,
            "ratio": ours / stock,
            "same_losses_first_steps": stock_steps[:first] == steps["ours"][:first],
            "options": rows,
        }
        shown = ", ".join(
            f"{name} FAILED"
            if option.get("error")
            else f"{name} x{option['ratio_to_stock']:.2f}"
            + (" (slower than fp32)" if option["slower_than_fp32"] else "")
            for name, option in rows.items()
        )
        log(
            f"perf: train {cell.model}: stock {stock:.0f} img/s, ours {ours:.0f} img/s "
            f"(x{ours / stock:.2f}); {shown}"
        )
    return results


def step_costs(
    cells, data: ImageSplits, repeats: int, log: Log, modes: dict[str, dict] | None = None
) -> dict[str, dict]:
    """Milliseconds per training step at batch 4, per family: stock pythae, our runner
    (pythae's trainer) and the vaebench engine in each mode, on the first 256 training images,
    without validation. A step's time is the median interval between consecutive steps (an
    epoch's start is an outlier the median ignores); each runner warms up once (a compiled
    mode compiles there), then the runners are interleaved, median of `repeats`."""
    modes = ENGINE_MODES if modes is None else modes
    small = ImageSplits(
        train=data.train[:STEP_COST_IMAGES], val=data.val[:0], test=data.test[:STEP_COST_BATCH]
    )
    results = {}
    for cell in cells:
        family = FAMILIES.get(cell.model)
        params = family.params_model(**cell.params)
        at4 = _with_train(cell, {"batch_size": STEP_COST_BATCH, "epochs": 1})
        runners = {
            "stock": partial(_stock_step_ms, family, at4, params, small),
            "ours": partial(_our_step_ms, family, at4, params, small),
        } | {
            name: partial(_our_step_ms, family, _with_train(at4, changes), params, small)
            for name, changes in modes.items()
        }
        errors = {}
        for name, run in list(runners.items()):  # warm-up
            try:
                run()
            except Exception as error:  # noqa: BLE001 - reported in the mode's row
                if name in ("stock", "ours"):
                    raise
                errors[name] = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
                del runners[name]
        samples: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(repeats):
            for name, run in runners.items():
                samples[name].append(run())
        ms = {name: statistics.median(values) for name, values in samples.items()}
        results[cell.model] = {"batch_size": STEP_COST_BATCH, "ms_per_step": ms, "errors": errors}
        shown = ", ".join(f"{name} {value:.2f}" for name, value in ms.items())
        log(f"perf: ms per step at batch {STEP_COST_BATCH}, {cell.model}: {shown}")
    return results


def _median_gap_ms(times: list[float]) -> float:
    return 1000 * statistics.median(b - a for a, b in zip(times, times[1:], strict=False))


def _stock_step_ms(family: Family, cell, params, data: ImageSplits) -> float:
    times: list[float] = []
    _stock_pipeline(family, cell, params, data, on_step=lambda step, batch, at: times.append(at))
    return _median_gap_ms(times)


def _our_step_ms(family: Family, cell, params, data: ImageSplits) -> float:
    rates: list[float] = []
    _ours(family, cell, params, data, on_step=lambda v: rates.append(v["perf/images_per_s"]))
    return 1000 * STEP_COST_BATCH / statistics.median(rates)
