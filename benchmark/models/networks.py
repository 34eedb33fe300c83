"""Encoder / decoder / discriminator networks, in two sets.

- ``compact``: small strided-conv networks for any (C, H, W) with H, W divisible by 4. They make
  the quick suite fit a 2-core CPU in minutes while still learning real models.
- ``pythae``: the networks of pythae's published benchmark (``pythae.models.nn.benchmarks``) for
  28x28x1, 32x32x3 and 64x64x3 inputs, for GPU runs.

All of them speak pythae's protocol (``ModelOutput`` with ``embedding`` / ``log_covariance`` /
``reconstruction``; discriminators expose ``depth`` and ``embedding_layer_i``).
"""

from __future__ import annotations

from types import ModuleType

import torch
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseDiscriminator, BaseEncoder
from torch import nn

from benchmark.errors import UserInputError

Shape = tuple[int, int, int]


def _check_compact_shape(input_shape: Shape) -> tuple[int, int]:
    _, height, width = input_shape
    if height % 4 or width % 4:
        raise UserInputError(
            f"compact networks need height and width divisible by 4, got {height}x{width}; "
            "set data.image_size"
        )
    return height // 4, width // 4


def _trunk(channels: int, width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, width, 4, 2, 1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 4, 2, 1),
        nn.ReLU(),
    )


class CompactGaussianEncoder(BaseEncoder):
    """x -> (mu, log_var) for BetaVAE and VAEGAN."""

    def __init__(self, input_shape: Shape, latent_dim: int, width: int = 32) -> None:
        BaseEncoder.__init__(self)
        h, w = _check_compact_shape(input_shape)
        self.trunk = _trunk(input_shape[0], width)
        self.mu = nn.Linear(2 * width * h * w, latent_dim)
        self.log_var = nn.Linear(2 * width * h * w, latent_dim)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        features = self.trunk(x).flatten(1)
        return ModelOutput(embedding=self.mu(features), log_covariance=self.log_var(features))


class CompactDecoder(BaseDecoder):
    """z (B, latent_dim) or a quantised map (B, D, H/4, W/4) -> image in [0, 1]."""

    def __init__(
        self, input_shape: Shape, latent_dim: int, width: int = 32, spatial: bool = False
    ) -> None:
        BaseDecoder.__init__(self)
        self.h, self.w = _check_compact_shape(input_shape)
        self.width = width
        self.spatial = spatial
        if spatial:
            self.stem = nn.Sequential(nn.Conv2d(latent_dim, 2 * width, 1), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Linear(latent_dim, 2 * width * self.h * self.w), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, input_shape[0], 4, 2, 1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> ModelOutput:
        features = self.stem(z)
        if not self.spatial:
            features = features.reshape(z.shape[0], 2 * self.width, self.h, self.w)
        return ModelOutput(reconstruction=self.up(features))


class CompactVQEncoder(BaseEncoder):
    """x -> a (B, D, H/4, W/4) map of vectors to quantise."""

    def __init__(self, input_shape: Shape, embedding_dim: int, width: int = 32) -> None:
        BaseEncoder.__init__(self)
        _check_compact_shape(input_shape)
        self.trunk = _trunk(input_shape[0], width)
        self.project = nn.Conv2d(2 * width, embedding_dim, 1)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return ModelOutput(embedding=self.project(self.trunk(x)))


class CompactDiscriminator(BaseDiscriminator):
    """Three levels, like pythae's: conv, conv, linear+sigmoid. Level 2 is the feature layer."""

    def __init__(self, input_shape: Shape, width: int = 32) -> None:
        BaseDiscriminator.__init__(self)
        h, w = _check_compact_shape(input_shape)
        self.layers = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(input_shape[0], width, 4, 2, 1), nn.LeakyReLU(0.2)),
                nn.Sequential(nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2)),
                nn.Sequential(nn.Flatten(), nn.Linear(2 * width * h * w, 1), nn.Sigmoid()),
            ]
        )
        self.depth = len(self.layers)

    def forward(self, x: torch.Tensor, output_layer_levels: list[int] | None = None) -> ModelOutput:
        output = ModelOutput()
        levels = output_layer_levels or []
        last = self.depth if (not levels or -1 in levels) else max(levels)
        out = x
        for index in range(last):
            out = self.layers[index](out)
            if index + 1 in levels:
                output[f"embedding_layer_{index + 1}"] = out
            if index + 1 == self.depth:
                output["embedding"] = out
        return output


# ---- pythae's published benchmark networks ------------------------------------------------


def _pythae_module(input_shape: Shape) -> tuple[ModuleType, str]:
    from pythae.models.nn.benchmarks import celeba, cifar, mnist

    table = {
        (1, 28, 28): (mnist, "MNIST"),
        (3, 32, 32): (cifar, "CIFAR"),
        (3, 64, 64): (celeba, "CELEBA"),
    }
    if tuple(input_shape) not in table:
        shapes = ", ".join("x".join(map(str, s)) for s in table)
        raise UserInputError(
            f"pythae's benchmark networks exist for inputs {shapes} (C x H x W), "
            f"got {'x'.join(map(str, input_shape))}; use arch=compact or set data.image_size"
        )
    return table[tuple(input_shape)]


def pythae_networks(kind: str, model_config) -> nn.Module:
    """kind: gaussian_encoder | decoder | discriminator | vq_encoder | vq_decoder."""
    module, suffix = _pythae_module(model_config.input_dim)
    names = {
        "gaussian_encoder": f"Encoder_Conv_VAE_{suffix}",
        "decoder": f"Decoder_Conv_AE_{suffix}",
        "discriminator": f"Discriminator_Conv_{suffix}",
        "vq_encoder": f"Encoder_ResNet_VQVAE_{suffix}",
        "vq_decoder": f"Decoder_ResNet_VQVAE_{suffix}",
    }
    return getattr(module, names[kind])(model_config)
