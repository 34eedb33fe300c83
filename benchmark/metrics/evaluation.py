"""Evaluate a trained model on the two evaluation sets of docs/metrics.md.

``recon/``: held-out test images x vs the model's reconstructions of them.
``gen/``:   x_gen decoded from prior samples vs the model's reconstructions of x_gen.
Both run the very same function. Evaluation is pure with respect to the model: eval mode
(no EMA codebook update, no dropout), inference mode, a fixed seed, and the global RNG
state and the model's train/eval mode restored afterwards.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from pythae.models import BaseAE

from benchmark.config import EvalConfig
from benchmark.data.loading import float_batches
from benchmark.errors import one_line
from benchmark.metrics.providers import PROVIDERS, Scorer
from benchmark.metrics.registry import active_units, codebook_stats, per_image_metrics
from benchmark.metrics.samplers import Sampler
from benchmark.models import Family
from benchmark.models.family import at_rest

GRID_PAIRS = 32
GRID_SAMPLES = 64
CODEBOOK_KEYS = ("codebook_perplexity", "codebook_usage")  # codebook_stats' keys


@contextmanager
def evaluation_mode(model: BaseAE, seed: int) -> Iterator[None]:
    with at_rest(model, seed), torch.inference_mode():
        yield


class _Guard:
    """Computes one metric's values. With a `failures` dict, the first exception marks that
    metric failed (its reason in `failures`) and later calls for it are skipped: one broken
    metric costs only itself, never the cell's other numbers. Without one, errors propagate."""

    def __init__(self, failures: dict[str, str] | None) -> None:
        self.failures = failures

    def __call__(self, key: str, compute, *args):
        """compute(*args), or None when the metric has failed."""
        if self.failures is None:
            return compute(*args)
        if key in self.failures:
            return None
        try:
            return compute(*args)
        except Exception as error:  # noqa: BLE001 - recorded with its reason
            self.failures[key] = f"failed: {one_line(error)}"
            return None


def evaluate_set(
    family: Family,
    model: BaseAE,
    params,
    images,
    batch_size: int,
    scorers: dict[str, Scorer] | None = None,
    failures: dict[str, str] | None = None,
):
    """Per-image metrics of one evaluation set, averaged; set-level diagnostics added; and each
    provider's metrics (`scorers`: provider name -> its scorer for this set, fed every batch).

    ``images``: uint8 (N, C, H, W) or float in [0, 1]. A metric that raises is left out and
    named in ``failures`` (key, or provider name -> reason), when given; without it, it
    raises. Returns (metrics, grid pairs).
    """
    guard = _Guard(failures)
    device = next(model.parameters()).device
    per_image: dict[str, list[torch.Tensor]] = defaultdict(list)
    stats: dict[str, list[torch.Tensor]] = defaultdict(list)
    scorers = scorers or {}
    pairs = None
    pixel_metrics = per_image_metrics()
    for x in float_batches(images, batch_size, device):
        out = family.evaluate_batch(model, x, params)
        if pairs is None:  # a few inputs and their reconstructions, for image grids
            pairs = (x[:GRID_PAIRS].cpu(), out.x_hat[:GRID_PAIRS].clamp(0, 1).cpu())
        for name, scorer in scorers.items():
            guard(name, scorer.update, x, out.x_hat)
        computed = {key: guard(key, metric, x, out.x_hat) for key, metric in pixel_metrics.items()}
        for key, values in computed.items():
            if values is not None:
                per_image[key].append(values)
        for key, values in out.per_image.items():
            per_image[key].append(values)
        for key, values in out.stats.items():
            stats[key].append(values)

    failed = failures or {}
    metrics = {
        key: float(torch.cat(values).double().mean())
        for key, values in per_image.items()
        if key not in failed
    }
    if "kl" in metrics and "mse" in metrics:
        metrics["elbo"] = metrics["mse"] + metrics["kl"]  # mean of per-image (mse + kl)
    if "mu" in stats:
        units = guard("active_units", active_units, torch.cat(stats["mu"]))
        if units is not None:
            metrics["active_units"] = units
    if "codes" in stats:
        codebook = guard(
            "codebook", codebook_stats, torch.cat(stats["codes"]), params.num_embeddings
        )
        metrics.update(codebook or {})
    for name, scorer in scorers.items():
        metrics.update(guard(name, scorer.compute) or {})
    return metrics, pairs


def generate(sampler: Sampler, n: int, batch_size: int) -> torch.Tensor:
    """x_gen: n images from the sampler, clamped to [0, 1] to be valid reference images."""
    chunks = []
    for start in range(0, n, batch_size):
        chunks.append(sampler.draw(min(batch_size, n - start)).clamp(0, 1))
    return torch.cat(chunks)


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    from torchvision.utils import make_grid

    return make_grid(images, nrow=nrow, padding=1, pad_value=1.0)


def evaluate(
    family: Family,
    model: BaseAE,
    params,
    test_images: torch.Tensor,
    config: EvalConfig,
    sampler: Sampler | None,
    loaded: dict[str, Any] | None = None,
    failures: dict[str, str] | None = None,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Return ({"recon/mse": ..., "gen/ssim": ..., "gen/fid": ...}, image grids).

    `gen/` images come from the fitted `sampler` (None: no gen/ set). `loaded`: provider name
    -> what that provider loaded (`providers.PROVIDERS`: the LPIPS network, the test set's
    FID features, the dataset's classifier reference); each scores both sets.
    Grids: `reconstructions` (rows of 8 inputs, each above its 8 reconstructions) and
    `samples`, as (C, H, W) tensors in [0, 1].
    With `failures` (a dict), a metric that raises is left out and named there with its
    reason (`recon/ssim` -> `failed: ...`); the others are computed as usual.
    """
    n_gen = config.n_gen or len(test_images)
    loaded = loaded or {}

    def scorers(set_name: str) -> dict[str, Scorer]:
        return {name: PROVIDERS.get(name).scorer(it, set_name) for name, it in loaded.items()}

    recon_failed: dict[str, str] | None = None if failures is None else {}
    gen_failed: dict[str, str] | None = None if failures is None else {}
    gen: dict[str, float] = {}
    x_gen = None
    with evaluation_mode(model, config.seed):
        recon, (x, x_hat) = evaluate_set(
            family, model, params, test_images, config.batch_size, scorers("recon"), recon_failed
        )
        if sampler is not None:
            x_gen = generate(sampler, n_gen, config.batch_size)
            gen, _ = evaluate_set(
                family, model, params, x_gen, config.batch_size, scorers("gen"), gen_failed
            )
    metrics = {f"recon/{k}": v for k, v in sorted(recon.items())}
    metrics.update({f"gen/{k}": v for k, v in sorted(gen.items())})
    if failures is not None:
        failures.update(_failed_keys("recon", recon_failed, recon))
        failures.update(_failed_keys("gen", gen_failed, gen))
    rows = [torch.cat([x[i : i + 8], x_hat[i : i + 8]]) for i in range(0, len(x), 8)]
    grids = {"reconstructions": image_grid(torch.cat(rows))}
    if x_gen is not None:
        grids["samples"] = image_grid(x_gen[:GRID_SAMPLES].cpu())
    return metrics, grids


def _failed_keys(prefix: str, failed: dict[str, str] | None, computed: dict) -> dict[str, str]:
    """Record keys of the failed metrics: `codebook` stands for the codebook statistics, a
    provider's name for its metrics of this set."""
    keys = {}
    for name, reason in (failed or {}).items():
        if name == "codebook":
            names = CODEBOOK_KEYS
        elif name in PROVIDERS:
            names = PROVIDERS.get(name).metric_names(prefix)
        else:
            names = (name,)
        keys.update({f"{prefix}/{n}": reason for n in names if n not in computed})
    return keys
