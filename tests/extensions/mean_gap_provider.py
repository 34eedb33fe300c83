"""A set-level metric from outside the package, for tests/test_extension.py: the gap between
the mean pixel of a set and the mean pixel of its reconstructions, over the whole set (one
number per set, not a mean of per-image values). Its registration is all it takes."""

from __future__ import annotations

import torch

from benchmark.metrics.providers import Provider
from benchmark.metrics.registry import MetricInfo

LOADS: list[str] = []  # the devices it was loaded for, once per process and device


class MeanGap:
    def __init__(self) -> None:
        self.sums = torch.zeros(2, dtype=torch.float64)
        self.pixels = 0

    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        self.sums += torch.stack([x.double().sum(), x_hat.clamp(0, 1).double().sum()])
        self.pixels += x.numel()

    def compute(self) -> dict[str, float]:
        means = self.sums / self.pixels
        return {"mean_gap": float((means[0] - means[1]).abs())}


def load(shared, config, data, device):
    LOADS.append(device)
    return "no network", None


PROVIDER = Provider(
    "mean_gap",
    needs="nothing but the images",
    requires=(),
    load=load,
    scorer=lambda loaded, set_name: MeanGap(),
    settings=None,
)
METRIC = MetricInfo(
    "mean_gap",
    False,
    "never",
    "|mean pixel - mean reconstructed pixel| of the set",
    switch="mean_gap",
)
