"""The real pretrained networks, as `vaebench prepare` provisions them: their pins, their
equivalence with the file they were converted from, and their validity on real images.

They skip, with the command that provisions them, where the weights cache is empty; CI runs
`vaebench prepare` first, so there they run.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.config import DataConfig
from benchmark.data import weights
from benchmark.data.loading import load_image_splits
from conftest import REAL_WEIGHTS, SHARED_MNIST_MIRROR

LPIPS_EXAMPLES = __import__("pathlib").Path(__file__).parent / "data" / "lpips"


def kept_archive(network) -> bytes:
    """The distribution `prepare` fetched (kept in the cache's dist/), or skip."""
    path = REAL_WEIGHTS / "dist" / network.archive.file_name
    if not path.is_file():
        pytest.skip(f"{network.archive.file_name} not in {path.parent}: run `vaebench prepare`")
    return path


@pytest.mark.parametrize("network", weights.ALL_WEIGHTS, ids=lambda n: n.name)
def test_the_pins_are_what_the_index_distributions_give(network, real_weights):
    """Each pinned tensors SHA-256 is re-derived from the distribution on the index."""
    path = kept_archive(network)
    state = weights._convert_member(network.archive, path)
    assert weights.tensors_sha256(state) == network.tensors_sha256


def test_the_converted_inception_computes_what_the_torchscript_computes(real_weights):
    """The pinned TorchScript (hash-checked; run here, in a test, only to prove the mapping)
    and torch-fidelity's network on the converted tensors give the same pool3 features on
    the same 299x299 input."""
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x as resize,
    )

    from benchmark.metrics.distribution import InceptionFeatures

    real_weights(weights.FID_INCEPTION)
    member = weights.archive_member(
        weights.FID_INCEPTION.archive, kept_archive(weights.FID_INCEPTION)
    )
    reference = torch.jit.load(io.BytesIO(member)).eval()
    ours, reason = InceptionFeatures.load()
    assert reason is None
    torch.manual_seed(0)
    images = (torch.rand(3, 3, 40, 40) * 255).round().to(torch.uint8)
    with torch.inference_mode():
        theirs = reference(resize(images.float(), size=(299, 299), align_corners=False) / 128 - 1)
        mine = ours(images)
    assert mine.shape == (3, 2048)
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def example(name: str) -> torch.Tensor:
    pixels = np.array(Image.open(LPIPS_EXAMPLES / f"{name}.png").convert("RGB"))
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize(
    ("net", "to_p0", "to_p1"),
    # measured here on the provisioned weights (2026-12-02); both backbones put ex_p1 closer
    # to ex_ref, as LPIPS's human judges did
    [("alex", 0.7219, 0.1376), ("vgg", 0.5686, 0.4217)],
)
def test_lpips_on_its_own_example_images(net, to_p0, to_p1, real_weights):
    from benchmark.metrics.registry import LPIPS

    real_weights(weights.LPIPS_BACKBONES[net])
    lpips, reason = LPIPS.load("cpu", net)
    assert reason is None
    ref, p0, p1 = example("ex_ref"), example("ex_p0"), example("ex_p1")
    with torch.no_grad():
        d0, d1, same = lpips(ref, p0).item(), lpips(ref, p1).item(), lpips(ref, ref).item()
    assert same == pytest.approx(0, abs=1e-6)
    assert d1 < d0
    assert (d0, d1) == pytest.approx((to_p0, to_p1), abs=2e-4)


def mnist_test(n: int) -> torch.Tensor:
    data = load_image_splits("mnist-5k", DataConfig())
    return data.test[:n].float() / 255, data.train


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(images, kernel_size=2 * round(3 * sigma) + 1, sigma=sigma)


def noisy(images: torch.Tensor, std: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return (images + std * torch.randn(images.shape, generator=generator)).clamp(0, 1)


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_is_zero_for_identical_digits_and_rises_with_blur_and_noise(net, real_weights):
    from benchmark.metrics.registry import LPIPS

    real_weights(weights.LPIPS_BACKBONES[net])
    lpips, _ = LPIPS.load("cpu", net)
    digits, _ = mnist_test(64)
    with torch.no_grad():
        same = lpips(digits, digits)
        blur = [lpips(digits, blurred(digits, s)).mean().item() for s in (0.5, 1.0, 2.0)]
        noise = [lpips(digits, noisy(digits, s)).mean().item() for s in (0.05, 0.1, 0.2)]
    assert same.abs().max() < 1e-6
    assert blur == sorted(blur) and blur[0] > 0.001, blur
    assert noise == sorted(noise) and noise[0] > 0.001, noise


@pytest.mark.slow
def test_fid_and_kid_separate_datasets_and_rise_with_blur(real_weights):
    """On the real Inception: MNIST test against MNIST train is far below Fashion-MNIST against
    MNIST train, and blurring the test digits raises both. 100 images a set (the Inception
    embeds about 6 images/s on 2 CPU cores): FID is biased upward at this size, KID is not;
    the order is what is tested."""
    from benchmark.metrics.distribution import InceptionFeatures, frechet_distance
    from benchmark.metrics.distribution import kernel_distance as kid

    real_weights(weights.FID_INCEPTION)
    fashion_folder = SHARED_MNIST_MIRROR / "zalando-datasets" / "fashion_mnist"
    if not fashion_folder.is_dir():
        pytest.skip(f"no Fashion-MNIST mirror at {fashion_folder}")
    features, _ = InceptionFeatures.load()
    digits, train = mnist_test(100)
    fashion = load_image_splits(
        "fashion_mnist", DataConfig(max_train=100), str(SHARED_MNIST_MIRROR)
    ).train
    reference = features(train[:100])
    sets = {
        "mnist test": features(digits),
        "blurred 1": features(blurred(digits, 1.0)),
        "blurred 2": features(blurred(digits, 2.0)),
        "fashion": features(fashion[:100]),
    }
    fid = {name: frechet_distance(f, reference) for name, f in sets.items()}
    kids = {name: kid(f, reference) for name, f in sets.items()}
    for scores in (fid, kids):
        assert scores["mnist test"] < scores["blurred 1"] < scores["blurred 2"], scores
        assert scores["fashion"] > 3 * scores["mnist test"], scores
    assert abs(kids["mnist test"]) < 0.02, kids
