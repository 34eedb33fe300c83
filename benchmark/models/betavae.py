"""BetaVAE: pythae's BetaVAE trained by its BaseTrainer."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from pythae.models import BetaVAE, BetaVAEConfig
from pythae.trainers import BaseTrainer

from benchmark.config import MAX_LEARNING_RATE, MAX_WIDTH, Section
from benchmark.models.family import (
    BatchEval,
    Family,
    base_trainer_config,
    gaussian_posterior,
    kl_per_image,
    pythae_config,
    sum_squared_error,
)
from benchmark.models.networks import CompactDecoder, CompactGaussianEncoder, pythae_networks


class BetaVAEParams(Section):
    latent_dim: int = Field(16, ge=1, le=MAX_WIDTH)
    beta: float = Field(1.0, ge=0, le=10_000)
    reconstruction_loss: Literal["mse", "bce"] = "mse"
    learning_rate: float | None = Field(
        None, gt=0, le=MAX_LEARNING_RATE
    )  # None: train.learning_rate
    width: int = Field(32, ge=1, le=MAX_WIDTH)  # compact networks only


def build(params: BetaVAEParams, input_shape, arch: str) -> BetaVAE:
    config = pythae_config(
        BetaVAEConfig,
        input_dim=tuple(input_shape),
        latent_dim=params.latent_dim,
        beta=params.beta,
        reconstruction_loss=params.reconstruction_loss,
    )
    if arch == "pythae":
        encoder = pythae_networks("gaussian_encoder", config)
        decoder = pythae_networks("decoder", config)
    else:
        encoder = CompactGaussianEncoder(input_shape, params.latent_dim, params.width)
        decoder = CompactDecoder(input_shape, params.latent_dim, params.width)
    return BetaVAE(config, encoder=encoder, decoder=decoder)


def own_recon_loss(x: torch.Tensor, x_hat: torch.Tensor, kind: str) -> torch.Tensor:
    """BetaVAE's training reconstruction loss per image, exactly as pythae computes it."""
    if kind == "bce":
        return F.binary_cross_entropy(x_hat.flatten(1), x.flatten(1), reduction="none").sum(dim=1)
    return 0.5 * sum_squared_error(x, x_hat)


def evaluate_batch(model: BetaVAE, x: torch.Tensor, params: BetaVAEParams) -> BatchEval:
    mu, log_var, z = gaussian_posterior(model, x)
    x_hat = model.decoder(z).reconstruction
    recon_loss = own_recon_loss(x, x_hat, params.reconstruction_loss)
    kl = kl_per_image(mu, log_var)
    return BatchEval(
        x_hat=x_hat,
        per_image={"recon_loss": recon_loss, "kl": kl, "total_loss": recon_loss + params.beta * kl},
        stats={"mu": mu},
    )


FAMILY = Family(
    name="betavae",
    label="BetaVAE",
    column=1,  # the summary table reads VAEGAN | BetaVAE | VQVAE
    own_loss="0.5·SSE",
    latent="gaussian",
    pythae_name="BetaVAE",
    params_model=BetaVAEParams,
    build=build,
    trainer_config=base_trainer_config,
    trainer_cls=BaseTrainer,
    evaluate_batch=evaluate_batch,
    samplers=("normal", "gmm"),
    train_components=("loss", "recon_loss", "reg_loss"),
)
