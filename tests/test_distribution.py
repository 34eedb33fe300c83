"""FID and KID: our pipeline (quantise, replicate grayscale, batch, torch-fidelity's formulas)
against torch-fidelity's own end-to-end numbers and against the definitions in numpy/scipy,
with a small randomly initialised feature network (the Inception weights are not here)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from benchmark.metrics import distribution
from benchmark.metrics.distribution import DistributionReference, SetFeatures

FEATURE_NAME = "vaebench-test-random"


def random_network(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 12, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(12, 10),
        Scale(1 / 40),  # features of order 1, like Inception's pool3
    )


class RandomFeatures(FeatureExtractorBase):
    """The same network as a torch-fidelity feature extractor (uint8 in, as Inception)."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        self.body = random_network()

    def forward(self, x):
        return (self.body(x.float() / 255),)

    @staticmethod
    def get_provided_features_list():
        return ("feat",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "feat"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)


def our_features() -> SetFeatures:
    body = random_network()
    return SetFeatures(torch.nn.Sequential(Scale(), body), "random test features")


class Scale(torch.nn.Module):
    def __init__(self, divisor: float = 255):
        super().__init__()
        self.divisor = divisor

    def forward(self, x):
        return x.float() / self.divisor


def image_sets(n_a=120, n_b=90):
    """Grayscale float images in [0, 1], two different distributions."""
    generator = torch.Generator().manual_seed(3)
    a = torch.rand(n_a, 1, 20, 20, generator=generator)
    b = torch.rand(n_b, 1, 20, 20, generator=generator) ** 3
    b[:, :, 5:15, 5:15] += 0.6
    return a, b.clamp(0, 1)


class UInt8Set(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = distribution.to_uint8_rgb(images)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


@pytest.fixture(scope="module")
def fidelity_registered():
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if FEATURE_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(FEATURE_NAME, RandomFeatures)


def library_numbers(a, b, subset):
    import torch_fidelity

    return torch_fidelity.calculate_metrics(
        input1=UInt8Set(a),
        input2=UInt8Set(b),
        fid=True,
        kid=True,
        kid_subset_size=subset,
        feature_extractor=FEATURE_NAME,
        cuda=False,
        cache=False,
        verbose=False,
        batch_size=32,
    )


def reference(b) -> DistributionReference:
    features = our_features()
    return DistributionReference(features, features(b, batch_size=17))


def test_fid_and_kid_equal_torch_fidelity_end_to_end(fidelity_registered):
    a, b = image_sets()
    library = library_numbers(a, b, subset=90)
    ref = reference(b)
    fid, kid = ref.fid_and_kid_of(ref.features(a))
    assert fid == pytest.approx(library["frechet_inception_distance"], rel=1e-4)
    assert kid == pytest.approx(library["kernel_inception_distance_mean"], rel=1e-4)
    assert fid > 0.01  # two different distributions: the comparison is not between zeros


def frechet_from_definition(x: np.ndarray, y: np.ndarray) -> float:
    """||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)), in float64 with scipy's sqrtm."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    mu_x, mu_y = x.mean(0), y.mean(0)
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s_x @ s_y).real
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(s_x + s_y - 2 * root))


def unbiased_mmd2_cubic(x: np.ndarray, y: np.ndarray) -> float:
    """KID's estimator from its definition: unbiased MMD^2, k(u, v) = (u.v / d + 1)^3."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    d, m = x.shape[1], len(x)

    def k(u, v):
        return (u @ v.T / d + 1) ** 3

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(off - 2 * kxy.mean())


def test_fid_and_kid_equal_their_definitions():
    a, b = image_sets(n_a=80, n_b=80)
    features = our_features()
    fa, fb = features(a).numpy(), features(b).numpy()
    ref = reference(b)
    fid, kid = ref.fid_and_kid_of(ref.features(a))
    assert fid == pytest.approx(frechet_from_definition(fa, fb), rel=1e-4)
    # subsets of the whole set drawn without replacement are the whole set: one MMD^2 value
    assert kid == pytest.approx(unbiased_mmd2_cubic(fa, fb), rel=1e-4)


def test_same_distribution_scores_near_zero_and_kid_adapts_to_small_sets():
    a, b = image_sets(n_a=40, n_b=30)
    ref = reference(b)
    assert ref.fid_of(ref.features(b)) == pytest.approx(0.0, abs=1e-5)
    fid, kid = ref.fid_and_kid_of(
        ref.features(a)
    )  # torch-fidelity itself refuses 30 < 1000 samples
    assert fid > 0 and np.isfinite(kid)
    assert ref.settings(n_recon=30, n_gen=40)["kid_subset_size"] == 30


def test_grayscale_is_replicated_and_floats_are_rounded_to_uint8():
    images = (
        torch.tensor(
            [
                [
                    [[0.0, 0.5]],
                ]
            ]
        )
        .expand(1, 1, 1, 2)
        .clone()
    )
    images[0, 0, 0, 1] = 0.5 + 0.4 / 255
    rgb = distribution.to_uint8_rgb(images)
    assert rgb.dtype == torch.uint8 and rgb.shape == (1, 3, 1, 2)
    assert rgb[0, :, 0, 1].tolist() == [128, 128, 128]  # 127.9 rounds to 128, as a saved PNG


def test_torch_fidelity_inception_is_built_from_our_state_dict_without_its_loader(monkeypatch):
    """The converted tensors (four per convolution) reach torch-fidelity's network; its batch
    norm scales are one, its unused `fc` NaN; its URL fetch and its torch.load(weights_only=
    False) are never called."""
    from torch_fidelity import feature_extractor_inceptionv3 as module

    from benchmark.data import weight_conversion

    layout = weight_conversion.inception_network_state()
    torch.manual_seed(0)
    converted = {
        k: torch.rand_like(v) + 0.5
        for k, v in layout.items()
        if k.endswith((".conv.weight", ".bn.bias", ".bn.running_mean", ".bn.running_var"))
    }
    assert len(converted) == 4 * weight_conversion.INCEPTION_CONVS

    def no_fetch(*args, **kwargs):
        raise AssertionError("torch-fidelity's own loader must not run")

    original_fetch = module.load_state_dict_from_url
    monkeypatch.setattr(torch, "load", no_fetch)
    monkeypatch.setattr(module, "load_state_dict_from_url", no_fetch)
    network = distribution.inception_v3(converted)
    own = network.state_dict()
    assert all(torch.equal(own[k], v) for k, v in converted.items())
    assert torch.equal(own["Mixed_7c.branch_pool.bn.weight"], torch.ones(192))
    assert own["fc.weight"].isnan().all()
    assert module.load_state_dict_from_url is no_fetch  # the swap ended with the construction
    features = SetFeatures(network, "test")(torch.rand(2, 1, 28, 28))
    assert features.shape == (2, 2048)  # (random weights: the values mean nothing)
    assert original_fetch is not None
