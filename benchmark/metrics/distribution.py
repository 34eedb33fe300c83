"""Set-level metrics (docs/metrics.md "Distribution metrics"): FID and KID on Inception features.

The network and the formulas are torch-fidelity's: its TF-ported Inception-v3 ("inception-v3-
compat", 2048-d pool3 features, its own TF-compatible resize to 299), its Fréchet distance
and its unbiased polynomial-kernel MMD. vaebench supplies what torch-fidelity leaves to the
caller: images become uint8 the way a saved PNG would be (round to nearest), 1-channel images
are replicated to 3 channels, and the test set's features are computed once per dataset.

The weights are the pinned tensors of `benchmark.data.weights.FID_INCEPTION` (TensorFlow's
2015-12-05 graph, the reference FID's network), from the weights cache; torch-fidelity's own
loader (a URL fetch, or `torch.load(path, weights_only=False)`) is never used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.data import weights
from benchmark.data.weight_conversion import (
    fidelity_inception,
    inception_module_state,
    inception_network_state,
)

KID_SUBSETS = 100  # torch-fidelity's defaults
KID_SUBSET_SIZE = 1000
FEATURE_BATCH = 100


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] (or uint8) as a saved PNG would hold them: uint8, round to nearest.
    Every feature network of the set-level metrics sees images quantised this way."""
    if images.dtype != torch.uint8:
        images = images.clamp(0, 1).mul(255).round().to(torch.uint8)
    return images


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) floats in [0, 1] (or uint8) -> uint8 (N, 3, H, W)."""
    images = to_uint8(images)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class SetFeatures:
    """images -> uint8 RGB -> a feature network -> (N, d) float32 on the CPU, batch by batch.

    `network` takes uint8 (B, 3, H, W) and returns (B, d) or a tuple whose first item is that
    (torch-fidelity's feature extractors return a tuple of the requested layers).
    """

    def __init__(
        self, network: torch.nn.Module, description: str, device="cpu", weights: str | None = None
    ) -> None:
        self.network = network.eval().to(device)
        self.description = description
        self.weights = weights  # how the record names the network's tensors
        self.device = torch.device(device)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, batch_size: int = FEATURE_BATCH) -> torch.Tensor:
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = to_uint8_rgb(images[start : start + batch_size]).to(self.device)
            out = self.network(batch)
            out = out[0] if isinstance(out, tuple | list) else out
            chunks.append(out.float().cpu())
        return torch.cat(chunks)


class InceptionFeatures(SetFeatures):
    DESCRIPTION = "Inception-v3 pool3 (2048-d), torch-fidelity inception-v3-compat"

    @classmethod
    def load(cls, device="cpu") -> tuple[InceptionFeatures | None, str | None]:
        try:
            converted = weights.load_tensors(weights.FID_INCEPTION)
            network = inception_v3(converted)
        except weights.WeightsUnavailable as error:
            return None, str(error)
        except Exception as error:  # noqa: BLE001 - pinned tensors torch-fidelity cannot take
            return None, f"could not build torch-fidelity's Inception-v3 ({error})"
        return cls(network, cls.DESCRIPTION, device, weights.FID_INCEPTION.label), None


def inception_v3(converted: dict[str, torch.Tensor]) -> torch.nn.Module:
    """torch-fidelity's FID Inception, with its TF-exact resize, on the pinned tensors
    (`weights.FID_INCEPTION`: four per convolution; the rest as `inception_module_state`)."""
    state = inception_module_state(converted, inception_network_state())
    return fidelity_inception(state)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )

    stats_a = fid_features_to_statistics(features_a)
    stats_b = fid_features_to_statistics(features_b)
    return float(fid_statistics_to_metric(stats_a, stats_b, verbose=False)[KEY_METRIC_FID])


def kid_subset_size(n_a: int, n_b: int) -> int:
    """torch-fidelity's 1000, or the smaller set's size where a set is smaller (it refuses)."""
    return min(KID_SUBSET_SIZE, n_a, n_b)


def kernel_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    out = kid_features_to_metric(
        features_a,
        features_b,
        kid_subsets=KID_SUBSETS,
        kid_subset_size=kid_subset_size(len(features_a), len(features_b)),
        verbose=False,
    )
    return float(out[KEY_METRIC_KID_MEAN])


@dataclass
class DistributionReference:
    """The test set's features, against which a cell's sets are measured."""

    features: SetFeatures
    test_features: torch.Tensor

    def fid_of(self, features: torch.Tensor) -> float:
        return frechet_distance(features, self.test_features)

    def fid_and_kid_of(self, features: torch.Tensor) -> tuple[float, float]:
        return self.fid_of(features), kernel_distance(features, self.test_features)

    def settings(self, n_recon: int, n_gen: int) -> dict:
        """What the record says about how its set-level numbers were made."""
        return {
            "features": self.features.description,
            "weights": getattr(self.features, "weights", None),
            "n_test": len(self.test_features),
            "n_recon": n_recon,
            "n_gen": n_gen,
            "kid_subsets": KID_SUBSETS,
            "kid_subset_size": kid_subset_size(len(self.test_features), n_gen),
            "grayscale": "replicated to 3 channels",
            "quantisation": "uint8, round to nearest",
        }
