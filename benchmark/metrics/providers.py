"""Set-level and network metrics as providers: one registry entry each (`PROVIDERS`).

A per-image metric is a function in the metric registry (`metrics.METRICS`). A metric that
needs something of its own (pretrained weights, the dataset's labels, a network) or is only
defined over a whole set (FID, KID, cfd, precision, recall) is a provider, which declares:

- `name`: the `switch` of its keys in the metric registry, which says which keys of which
  sets (`SETS`) it reports, and its eval switch (`eval.fid`, ...) where `EvalConfig` has one;
- what it needs (`needs`, for the unavailable reasons and the docs) and what it imports
  (`requires`, which pre-flight checks before any cell trains);
- how it loads, once per process (`load(shared, config, data, device)` -> (network or
  reference, None) or (None, why it is unavailable));
- how it scores one evaluation set, torchmetrics-style: `scorer(loaded, set)` gives an object
  with `update(x, x_hat)` per batch (x: the set's images, x_hat: their reconstructions) and
  `compute()` -> {metric name: value};
- what the record keeps of how its numbers were made (`settings`, into `record_field`).

Evaluation, scoring, re-scoring and pre-flight loop over the providers; a new network metric
(the weights issue's, a learned perceptual metric of another kind) is one entry here and its
metric registry entries (`switch=` its name), plus an `EvalConfig` boolean to turn it off
(`tests/test_extension.py` registers one from the test folder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from benchmark.data import weights
from benchmark.metrics.registry import SETS, keys_switched_by
from benchmark.registry import Registry

if TYPE_CHECKING:
    from benchmark.config import RunConfig
    from benchmark.data.loading import ImageSplits


class Scorer(Protocol):
    """One evaluation set's accumulation of one provider's metrics."""

    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None: ...

    def compute(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class Provider:
    name: str
    needs: str  # what it needs, in words ("pretrained VGG16 weights")
    requires: tuple[tuple[str, str], ...]  # (module it imports, pip package): for pre-flight
    # (shared, config, data, device) -> (what it scores with, None) or (None, why not); `shared`
    # is the process's `resources.SharedResources`, which loads and keeps it once
    load: Callable[[Any, RunConfig, ImageSplits, str], tuple[Any, str | None]]
    scorer: Callable[[Any, str], Scorer]  # (what `load` gave, set name) -> a fresh scorer
    # what the record keeps of how the numbers were made: (loaded, n_recon, n_gen) -> dict,
    # stored in the record's `record_field`
    settings: Callable[[Any, int, int], dict] | None = None
    record_field: str | None = None
    # the pretrained networks it needs for an `EvalConfig` (`weights.NetworkWeights`): what
    # `vaebench prepare` and a run's pre-flight provision
    weights: Callable[[Any], tuple] = lambda eval_config: ()

    def has_switch(self, eval_config) -> bool:
        """Whether `EvalConfig` has a boolean `eval.NAME` for it (the three built-in ones)."""
        return self.name in type(eval_config).model_fields

    def enabled(self, eval_config) -> bool:
        """On for this config: its switch, where it has one; without one, always."""
        return not self.has_switch(eval_config) or bool(getattr(eval_config, self.name))

    def record_keys(self, sets: tuple[str, ...] = SETS) -> tuple[str, ...]:
        """Its record keys in `sets` (`recon/fid`, `gen/fid`, `gen/kid`), from the registry."""
        return keys_switched_by(self.name, sets)

    def networks(self, eval_config) -> tuple:
        """The pretrained networks it needs for this config: none when it is off."""
        return tuple(self.weights(eval_config)) if self.enabled(eval_config) else ()

    def metric_names(self, set_name: str) -> tuple[str, ...]:
        return tuple(key.split("/", 1)[1] for key in self.record_keys((set_name,)))


class MeanOfPairs:
    """A per-image distance of each image and its reconstruction, averaged over the set."""

    def __init__(self, name: str, distance: Callable) -> None:
        self.name, self.distance = name, distance
        self.values: list[torch.Tensor] = []

    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        self.values.append(self.distance(x, x_hat))

    def compute(self) -> dict[str, float]:
        return {self.name: float(torch.cat(self.values).double().mean())}


class FeaturesOfSet:
    """Features of a whole set, measured against the test set's at the end. `recon`: of the
    reconstructions, gathered batch by batch; `gen`: of the generated images themselves,
    extracted once over the whole set."""

    def __init__(self, set_name: str, extract: Callable, measure: Callable) -> None:
        self.of_reconstructions = set_name == "recon"
        self.extract, self.measure = extract, measure
        self.chunks: list[torch.Tensor] = []

    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        if self.of_reconstructions:
            self.chunks.append(self.extract(x_hat.clamp(0, 1)))
        else:
            self.chunks.append(x)

    def compute(self) -> dict[str, float]:
        gathered = torch.cat(self.chunks)
        return self.measure(gathered if self.of_reconstructions else self.extract(gathered))


# ---- the three of docs/metrics.md ---------------------------------------------------------


def _lpips_scorer(network, set_name: str) -> Scorer:
    return MeanOfPairs("lpips", network)


def _fid_scorer(reference, set_name: str) -> Scorer:
    if set_name == "recon":
        return FeaturesOfSet(set_name, reference.features, lambda f: {"fid": reference.fid_of(f)})
    return FeaturesOfSet(set_name, reference.features, lambda f: _fid_and_kid(reference, f))


def _fid_and_kid(reference, features: torch.Tensor) -> dict[str, float]:
    fid, kid = reference.fid_and_kid_of(features)
    return {"fid": fid, "kid": kid}


def _classifier_scorer(realism, set_name: str) -> Scorer:
    extract = realism.classifier.features
    if set_name == "recon":
        return FeaturesOfSet(set_name, extract, lambda f: {"cfd": realism.cfd_of(f)})
    return FeaturesOfSet(set_name, extract, lambda f: _cfd_precision_recall(realism, f))


def _cfd_precision_recall(realism, features: torch.Tensor) -> dict[str, float]:
    precision, recall = realism.precision_recall_of(features)
    return {"cfd": realism.cfd_of(features), "precision": precision, "recall": recall}


PROVIDERS: Registry[Provider] = Registry("set-level metric")
for _provider in (
    Provider(
        "lpips",
        needs="a pretrained VGG16 or AlexNet backbone (`vaebench prepare`)",
        requires=(("lpips", "lpips"), ("safetensors", "safetensors")),
        load=lambda shared, config, data, device: shared.lpips(config.eval.lpips_net, device),
        scorer=_lpips_scorer,
        settings=lambda network, n_recon, n_gen: network.settings(),
        record_field="lpips",
        weights=lambda eval_config: (weights.LPIPS_BACKBONES[eval_config.lpips_net],),
    ),
    Provider(
        "fid",
        needs="the FID Inception-v3 (`vaebench prepare`)",
        requires=(("torch_fidelity", "torch-fidelity"), ("safetensors", "safetensors")),
        load=lambda shared, config, data, device: shared.reference(config, data, device),
        scorer=_fid_scorer,
        settings=lambda reference, n_recon, n_gen: reference.settings(n_recon, n_gen),
        record_field="distribution",
        weights=lambda eval_config: (weights.FID_INCEPTION,),
    ),
    Provider(
        "classifier",
        needs="the dataset's labels (a shipped classifier, or one trained on them)",
        requires=(("torch_fidelity.metric_prc", "torch-fidelity"),),
        load=lambda shared, config, data, device: shared.realism(config, data, device),
        scorer=_classifier_scorer,
        settings=lambda realism, n_recon, n_gen: realism.settings(n_recon, n_gen),
        record_field="classifier",
    ),
):
    PROVIDERS.add(_provider.name, _provider)


def networks_needed(eval_configs) -> list:
    """The pretrained networks a set of cells needs, each once, in provider order."""
    wanted: dict = {}
    for eval_config in eval_configs:
        for provider in PROVIDERS.values():
            wanted.update(dict.fromkeys(provider.networks(eval_config)))
    return list(wanted)
