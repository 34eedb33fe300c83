"""What the cells of a run share in one process: where hub datasets are mirrored, how the
metric networks load, how often a cell keeps a rolling checkpoint, how a re-scored cell updates
its tracker run (`RunSettings`); and what is loaded once and kept (`SharedResources`): the
datasets, the metric networks, the test sets' features for FID/KID and for the dataset's own
classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmark.config import RunConfig
from benchmark.data.loading import ImageSplits, load_image_splits
from benchmark.errors import DatasetUnavailable, one_line
from benchmark.metrics.classifier import (
    ClassifierReference,
    ShippedClassifierDamaged,
    load_or_train,
    shipped,
)
from benchmark.metrics.distribution import DistributionReference, InceptionFeatures
from benchmark.metrics.registry import LPIPS
from benchmark.tracking.base import RunUpdater, no_update

Log = Callable[[str], None]


@dataclass(frozen=True)
class MetricNetworks:
    """How the pretrained metric networks are loaded: each loader takes a device and returns
    (network, None) or (None, why it is unavailable). Tests substitute their own."""

    lpips: Callable = LPIPS.load  # (device, net) with net "vgg" or "alex" (`eval.lpips_net`)
    features: Callable = InceptionFeatures.load  # FID/KID features: (device)


@dataclass(frozen=True)
class RunSettings:
    """What every cell of a run shares, in whichever process it runs (here, a `--jobs` worker,
    a SLURM job): where hub datasets are mirrored, how the metric networks load, how often
    a cell keeps a rolling checkpoint (epochs, 0: never; it changes no result, so it is a
    setting of the run, not of any cell), and how a cell scored again from its checkpoint
    updates its tracker run."""

    mirror: str | None = None
    networks: MetricNetworks = MetricNetworks()
    checkpoint_every: int = 0
    update_run: RunUpdater = no_update


class SharedResources:
    """Loaded once per process of a run: datasets (by name and data config), the metric
    networks and the test sets' FID features."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self._data: dict[tuple, ImageSplits | DatasetUnavailable] = {}
        self._networks = settings.networks
        self._loaded: dict[tuple[str, ...], tuple[Any, str | None]] = {}
        self._references: dict[tuple, DistributionReference] = {}
        self._realism: dict[tuple, tuple[ClassifierReference | None, str | None]] = {}

    def data(self, config: RunConfig) -> ImageSplits:
        key = (config.dataset, config.data)
        if key not in self._data:
            try:
                self._data[key] = load_image_splits(
                    config.dataset, config.data, self.settings.mirror
                )
            except DatasetUnavailable as error:
                self._data[key] = error
        loaded = self._data[key]
        if isinstance(loaded, DatasetUnavailable):
            raise loaded
        return loaded

    def _network(self, kind: str, device: str, *options: str) -> tuple[Any, str | None]:
        key = (kind, device, *options)
        if key not in self._loaded:
            self._loaded[key] = getattr(self._networks, kind)(device, *options)
        return self._loaded[key]

    def lpips(self, net: str, device: str) -> tuple[Any, str | None]:
        return self._network("lpips", device, net)

    def reference(
        self, config: RunConfig, data: ImageSplits, device: str
    ) -> tuple[DistributionReference | None, str | None]:
        """The test set's features for FID/KID, computed once per dataset and device."""
        features, reason = self._network("features", device)
        if features is None:
            return None, reason
        key = (config.dataset, config.data, device)
        if key not in self._references:
            self._references[key] = DistributionReference(features, features(data.test))
        return self._references[key], None

    def realism(
        self, config: RunConfig, data: ImageSplits, device: str, log: Log | None = None
    ) -> tuple[ClassifierReference | None, str | None]:
        """The test set's features in the dataset's own classifier (the one vaebench ships for
        a built-in dataset; else trained here on the full labelled training split, or read
        from the cache), once per dataset and device; or None and why it is unavailable."""
        key = (config.dataset, config.data, device)
        if key not in self._realism:
            self._realism[key] = self._realism_reference(config, data, device, log)
        return self._realism[key]

    def _realism_reference(self, config: RunConfig, data: ImageSplits, device: str, log):
        return realism_reference(
            config.dataset, data, device, log, lambda: self._full_dataset(config, data)
        )

    def _full_dataset(self, config: RunConfig, data: ImageSplits) -> ImageSplits:
        """The dataset as the classifier trains on it: the run's, without `data.max_train` and
        `data.max_test` (one feature space per dataset, whatever a run subsamples)."""
        if config.data.max_train is None and config.data.max_test is None:
            return data
        full = config.model_copy(
            update={"data": config.data.model_copy(update={"max_train": None, "max_test": None})}
        )
        return self.data(full)


def realism_reference(dataset: str, data: ImageSplits, device: str, log=None, full=None):
    """(the test set's features in the dataset's classifier, None) or (None, why not): the
    classifier vaebench ships for `dataset`, else one trained here on `full()` (the whole
    dataset; default: `data` itself)."""
    if data.labels is None:
        return None, f"no classifier: {data.labels_missing}"
    try:
        classifier = shipped(dataset, tuple(data.test.shape[1:]), device)
        if classifier is None:
            classifier = load_or_train(full() if full else data, device, log)
    except ShippedClassifierDamaged as error:
        return None, f"failed: {error}"
    except Exception as error:  # noqa: BLE001 - the cell's other metrics go on
        return None, f"failed: the dataset's classifier could not be trained ({one_line(error)})"
    if classifier.accurate_enough:
        return ClassifierReference.of(classifier, data.test), None
    info = classifier.info
    return None, (
        f"the dataset's classifier reaches a test accuracy of {info['test_accuracy']:.3f}, "
        f"below its recipe's floor of {info['accuracy_floor']}"
    )
