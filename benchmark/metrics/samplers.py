"""Where `gen/` samples come from (docs/metrics.md "Samplers"): fitted after training, then drawn.

- `normal`  (BetaVAE, VAEGAN default): z ~ N(0, I), the model's own prior.
- `gmm`     (BetaVAE, VAEGAN): a 10-component full-covariance Gaussian mixture on the training
            set's posterior means, with the settings of pythae's GaussianMixtureSampler.
- `prior`   (VQVAE default): a PixelCNN over the training set's code maps (models/code_prior.py).
- `uniform` (VQVAE): uniform, independent codes at every position, for comparison.

A fit runs with the model in eval mode under its own seed (`eval.seed`) in a forked RNG, so it
is reproducible and leaves the global random state as it found it. Draws use torch's RNG, which
evaluation seeds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmark.config import EvalConfig
from benchmark.data.loading import float_batches
from benchmark.models import vqvae
from benchmark.models.code_prior import fit_code_prior
from benchmark.models.family import at_rest, decode_latent, posterior_mean
from benchmark.registry import Registry


@dataclass
class Sampler:
    """A fitted sampler: `draw(n)` decodes n prior samples (decoder output, not yet clamped)."""

    name: str
    settings: dict[str, Any]
    draw: Callable[[int], torch.Tensor]
    fit: dict[str, Any] = field(default_factory=dict)  # what the fit measured
    fit_seconds: float = 0.0

    def describe(self) -> dict[str, Any]:
        """The record's `sampler` entry."""
        return {
            "name": self.name,
            "settings": self.settings,
            "fit_seconds": round(self.fit_seconds, 3),
            **self.fit,
        }


@dataclass
class FitInputs:
    model: Any
    params: Any
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    test_images: torch.Tensor
    config: EvalConfig

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encoded(self, images: torch.Tensor, encode: Callable) -> torch.Tensor:
        with torch.no_grad():
            batches = float_batches(images, self.config.batch_size, self.device)
            return torch.cat([encode(self.model, x) for x in batches])


SAMPLERS: Registry[Callable[[FitInputs], Sampler]] = Registry("sampler")


@SAMPLERS.register("normal")
def normal(inputs: FitInputs) -> Sampler:
    model, dim, device = inputs.model, inputs.params.latent_dim, inputs.device
    return Sampler(
        "normal",
        {"latent_dim": dim},
        lambda n: decode_latent(model, torch.randn(n, dim, device=device)),
    )


@SAMPLERS.register("gmm")
def gmm(inputs: FitInputs) -> Sampler:
    from sklearn.mixture import GaussianMixture

    means = inputs.encoded(inputs.train_images, posterior_mean).double().cpu()
    components = min(inputs.config.gmm_components, len(means))
    # pythae's GaussianMixtureSampler settings. pythae fits on its forward's z, a sample of
    # q(z|x), with an unseeded k-means start; here the means, seeded.
    mixture = GaussianMixture(
        n_components=components,
        covariance_type="full",
        max_iter=2000,
        tol=1e-3,
        random_state=inputs.config.seed,
    ).fit(means.numpy())
    test_means = inputs.encoded(inputs.test_images, posterior_mean).double().cpu().numpy()
    # torch draws (seeded by evaluation); sklearn's own sample() returns the samples grouped by
    # component, which would fill an image grid with one component
    distribution = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.as_tensor(mixture.weights_)),
        torch.distributions.MultivariateNormal(
            torch.as_tensor(mixture.means_), torch.as_tensor(mixture.covariances_)
        ),
    )
    model, device = inputs.model, inputs.device
    return Sampler(
        "gmm",
        {"components": components, "covariance": "full", "fitted_on": "posterior means"},
        lambda n: decode_latent(model, distribution.sample((n,)).float().to(device)),
        fit={
            "converged": bool(mixture.converged_),
            "iterations": int(mixture.n_iter_),
            "n_fit": len(means),
            # mean log-density of held-out posterior means: did the mixture generalise?
            "test_log_likelihood": float(mixture.score(test_means)),
        },
    )


@SAMPLERS.register("prior")
def learned_code_prior(inputs: FitInputs) -> Sampler:
    model, settings = inputs.model, inputs.config.prior
    height, width, flat = vqvae.code_layout(model)
    train_codes = inputs.encoded(inputs.train_images, vqvae.code_maps)
    num_codes = inputs.params.num_embeddings
    prior, per_epoch = fit_code_prior(
        train_codes,
        num_codes,
        channels=settings.channels,
        layers=settings.layers,
        kernel_size=settings.kernel_size,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
    )
    with torch.no_grad():
        test_nll = prior.nll_bits(inputs.encoded(inputs.test_images, vqvae.code_maps))
    return Sampler(
        "prior",
        {"model": "PixelCNN", "grid": [height, width], **settings.model_dump()},
        lambda n: vqvae.decode_codes(model, prior.sample(n, height, width), flat),
        fit={
            "train_nll_bits": [round(v, 4) for v in per_epoch],
            "test_nll_bits": round(test_nll, 4),
            "uniform_nll_bits": round(math.log2(num_codes), 4),
        },
    )


@SAMPLERS.register("uniform")
def uniform_codes(inputs: FitInputs) -> Sampler:
    model = inputs.model
    height, width, flat = vqvae.code_layout(model)
    num_codes = inputs.params.num_embeddings

    def draw(n: int) -> torch.Tensor:
        codes = torch.randint(0, num_codes, (n, height, width), device=inputs.device)
        return vqvae.decode_codes(model, codes, flat)

    return Sampler("uniform", {"grid": [height, width]}, draw)


def fit_sampler(name: str, model, params, train_images, test_images, config: EvalConfig) -> Sampler:
    """Fit sampler `name` to a trained model: eval mode, its own seed, global RNG untouched."""
    started = time.perf_counter()
    with at_rest(model, config.seed):
        sampler = SAMPLERS.get(name)(FitInputs(model, params, train_images, test_images, config))
    sampler.fit_seconds = time.perf_counter() - started
    return sampler
