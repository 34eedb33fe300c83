"""Each metric against an independent reference on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity

from benchmark.metrics import registry as metrics


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 1, 28, 28, generator=g, dtype=torch.float64)
    x_hat = (x + 0.2 * torch.randn(6, 1, 28, 28, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, x_hat


@pytest.fixture
def rgb_pair():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(4, 3, 32, 32, generator=g, dtype=torch.float64)
    x_hat = (x + 0.1 * torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, x_hat


def test_mse_bce_psnr_follow_their_formulas(pair):
    x, x_hat = pair
    a, b = x.numpy().reshape(6, -1), x_hat.numpy().reshape(6, -1)
    np.testing.assert_allclose(metrics.mse(x, x_hat).numpy(), ((a - b) ** 2).sum(1), rtol=1e-12)
    p = np.clip(b, 1e-7, 1 - 1e-7)
    expected_bce = -(a * np.log(p) + (1 - a) * np.log(1 - p)).sum(1)
    np.testing.assert_allclose(metrics.bce(x, x_hat).numpy(), expected_bce, rtol=1e-10)
    np.testing.assert_allclose(
        metrics.psnr(x, x_hat).numpy(), 10 * np.log10(1 / ((a - b) ** 2).mean(1)), rtol=1e-12
    )


def test_bce_clamps_saturated_outputs():
    x = torch.tensor([[[[1.0, 0.0]]]])
    x_hat = torch.tensor([[[[0.0, 1.0]]]])  # maximally wrong: log(0) without the clamp
    value = metrics.bce(x, x_hat)
    assert torch.isfinite(value).all()
    assert value.item() == pytest.approx(-2 * np.log(1e-7), rel=1e-5)


def test_ssim_matches_scikit_image_gaussian_weights(pair, rgb_pair):
    for x, x_hat in (pair, rgb_pair):
        ours = metrics.ssim(x.float(), x_hat.float()).numpy()
        reference = [
            structural_similarity(
                a.transpose(1, 2, 0),
                b.transpose(1, 2, 0),
                data_range=1.0,
                channel_axis=2,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            for a, b in zip(x.numpy(), x_hat.numpy(), strict=True)
        ]
        np.testing.assert_allclose(ours, reference, atol=2e-4)


def _gmsd_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Xue et al. 2014, written from the paper: 2x2 average pool, Prewitt/3, T=170/255^2."""

    def luminance(img):
        if img.shape[0] == 3:  # the Y of YIQ
            return 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
        return img[0]

    def pool(img):
        h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
        return img[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    prewitt = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]]) / 3.0

    def magnitude(img):
        gx = ndimage.correlate(img, prewitt, mode="constant")
        gy = ndimage.correlate(img, prewitt.T, mode="constant")
        return np.sqrt(gx**2 + gy**2)

    mr, md = magnitude(pool(luminance(x))), magnitude(pool(luminance(y)))
    t = 170 / 255**2
    gms = (2 * mr * md + t) / (mr**2 + md**2 + t)
    return float(gms.std())


def test_gmsd_matches_the_papers_definition(pair, rgb_pair):
    for x, x_hat in (pair, rgb_pair):
        ours = metrics.gmsd(x.float(), x_hat.float()).numpy()
        reference = [_gmsd_reference(a, b) for a, b in zip(x.numpy(), x_hat.numpy(), strict=True)]
        np.testing.assert_allclose(ours, reference, rtol=2e-3, atol=1e-5)


def test_ssim_and_gmsd_of_identical_images_are_perfect(pair):
    x, _ = pair
    assert torch.allclose(metrics.ssim(x.float(), x.float()), torch.ones(6), atol=1e-5)
    assert torch.allclose(metrics.gmsd(x.float(), x.float()), torch.zeros(6), atol=1e-5)


def test_kl_matches_closed_form():
    from benchmark.models.family import kl_per_image

    g = torch.Generator().manual_seed(0)
    mu, log_var = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    var = log_var.exp()
    expected = 0.5 * (var + mu**2 - 1 - torch.log(var)).sum(1)
    assert torch.allclose(kl_per_image(mu, log_var), expected, atol=1e-5)
    assert torch.allclose(kl_per_image(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_active_units_counts_dimensions_that_vary_across_data():
    g = torch.Generator().manual_seed(0)
    mu = torch.zeros(500, 4)
    mu[:, 0] = torch.randn(500, generator=g)  # variance ~1: active
    mu[:, 1] = 0.05 * torch.randn(500, generator=g)  # variance ~0.0025: collapsed
    mu[:, 2] = 3.0  # constant: collapsed
    mu[:, 3] = 0.5 * torch.randn(500, generator=g)  # variance ~0.25: active
    assert metrics.active_units(mu) == 2


def test_codebook_statistics():
    uniform = torch.arange(8).repeat(10)
    stats = metrics.codebook_stats(uniform, num_embeddings=16)
    assert stats["codebook_perplexity"] == pytest.approx(8.0)
    assert stats["codebook_usage"] == pytest.approx(0.5)
    single = metrics.codebook_stats(torch.zeros(50, dtype=torch.long), num_embeddings=16)
    assert single["codebook_perplexity"] == pytest.approx(1.0)
    assert single["codebook_usage"] == pytest.approx(1 / 16)


def test_lpips_with_an_explicitly_random_backbone(pair):
    x, x_hat = pair
    lpips = metrics.LPIPS(backbone=None)
    same = lpips(x.float(), x.float())
    different = lpips(x.float(), x_hat.float())
    assert same.shape == (6,) and different.shape == (6,)
    assert torch.allclose(same, torch.zeros(6), atol=1e-6)
    assert (different > 0).all()


def test_lpips_is_unavailable_without_provisioned_weights():
    """The reason is one short line with the command that fixes it (the tests' weights cache
    is empty)."""
    for net, title in (("vgg", "VGG16"), ("alex", "AlexNet")):
        network, reason = metrics.LPIPS.load("cpu", net)
        assert network is None
        assert reason == f"LPIPS {title} backbone not provisioned: run `vaebench prepare`"


def test_every_metric_knows_its_direction():
    assert metrics.METRICS["ssim"].higher_is_better
    assert not metrics.METRICS["gmsd"].higher_is_better
    assert metrics.METRICS["recon_loss"].ranked == "never"
    # kl: shown beside active_units, never ranked (zero at posterior collapse); elbo = mse + kl
    # between the Gaussian families only; discriminator_loss: shown, never ranked, no arrow
    assert metrics.METRICS["kl"].ranked == "never"
    assert metrics.METRICS["elbo"].ranked == "gaussian"
    assert metrics.METRICS["discriminator_loss"].ranked == "never"
