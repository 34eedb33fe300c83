"""VAEGAN: pythae's VAEGAN trained by its CoupledOptimizerAdversarialTrainer.

The coupled trainer keeps one optimizer each for encoder, decoder and discriminator and
applies pythae's margin / equilibrium gates (`update_encoder`, `update_decoder`,
`update_discriminator`). A plain BaseTrainer would optimise the summed loss, which is wrong.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from pythae.models import VAEGAN, VAEGANConfig
from pythae.trainers import (
    CoupledOptimizerAdversarialTrainer,
    CoupledOptimizerAdversarialTrainerConfig,
)

from benchmark.config import MAX_LEARNING_RATE, MAX_WIDTH, Section, TrainConfig
from benchmark.errors import UserInputError
from benchmark.models.family import (
    BatchEval,
    Family,
    base_trainer_values,
    gaussian_posterior,
    kl_per_image,
    optimizer_params,
    pythae_config,
)
from benchmark.models.networks import (
    CompactDecoder,
    CompactDiscriminator,
    CompactGaussianEncoder,
    pythae_networks,
)


class VAEGANParams(Section):
    latent_dim: int = Field(16, ge=1, le=MAX_WIDTH)
    adversarial_loss_scale: float = Field(0.5, ge=0, le=1)
    reconstruction_layer: int = Field(
        2, ge=1, le=16
    )  # discriminator level whose features are compared
    margin: float = Field(0.4, ge=0, le=1_000)
    equilibrium: float = Field(0.68, ge=0, le=1_000)
    # None: train.learning_rate
    encoder_learning_rate: float | None = Field(None, gt=0, le=MAX_LEARNING_RATE)
    decoder_learning_rate: float | None = Field(None, gt=0, le=MAX_LEARNING_RATE)
    discriminator_learning_rate: float | None = Field(None, gt=0, le=MAX_LEARNING_RATE)
    width: int = Field(32, ge=1, le=MAX_WIDTH)  # compact networks only


def build(params: VAEGANParams, input_shape, arch: str) -> VAEGAN:
    config = pythae_config(
        VAEGANConfig,
        input_dim=tuple(input_shape),
        latent_dim=params.latent_dim,
        adversarial_loss_scale=params.adversarial_loss_scale,
        reconstruction_layer=params.reconstruction_layer,
        margin=params.margin,
        equilibrium=params.equilibrium,
    )
    if arch == "pythae":
        encoder = pythae_networks("gaussian_encoder", config)
        decoder = pythae_networks("decoder", config)
        discriminator = pythae_networks("discriminator", config)
    else:
        encoder = CompactGaussianEncoder(input_shape, params.latent_dim, params.width)
        decoder = CompactDecoder(input_shape, params.latent_dim, params.width)
        discriminator = CompactDiscriminator(input_shape, params.width)
    if params.reconstruction_layer > discriminator.depth:
        raise UserInputError(
            f"vaegan.reconstruction_layer={params.reconstruction_layer} is deeper than the "
            f"discriminator (depth {discriminator.depth})"
        )
    return VAEGAN(config, encoder=encoder, decoder=decoder, discriminator=discriminator)


def trainer_config(params: VAEGANParams, train: TrainConfig, seed, output_dir, device):
    lr = train.learning_rate
    config = pythae_config(
        CoupledOptimizerAdversarialTrainerConfig,
        **base_trainer_values(train, seed, output_dir, device),
        encoder_learning_rate=params.encoder_learning_rate or lr,
        decoder_learning_rate=params.decoder_learning_rate or lr,
        discriminator_learning_rate=params.discriminator_learning_rate or lr,
        encoder_optimizer_cls=train.optimizer,
        decoder_optimizer_cls=train.optimizer,
        discriminator_optimizer_cls=train.optimizer,
        encoder_optimizer_params=optimizer_params(train, device),
        decoder_optimizer_params=optimizer_params(train, device),
        discriminator_optimizer_params=optimizer_params(train, device),
    )
    return config


def _features(model: VAEGAN, x: torch.Tensor) -> torch.Tensor:
    level = model.reconstruction_layer
    return model.discriminator(x, output_layer_levels=[level])[f"embedding_layer_{level}"]


def evaluate_batch(model: VAEGAN, x: torch.Tensor, params: VAEGANParams) -> BatchEval:
    # Random draws in pythae's order (posterior eps, then z_prior), so that with the same seed
    # the batch means equal pythae's forward exactly.
    mu, log_var, z = gaussian_posterior(model, x)
    x_hat = model.decoder(z).reconstruction
    z_prior = torch.randn_like(z)
    n = x.shape[0]
    recon_loss = 0.5 * (_features(model, x) - _features(model, x_hat)).pow(2).reshape(n, -1).sum(1)
    kl = kl_per_image(mu, log_var)
    d_real = model.discriminator(x).embedding.flatten()
    d_fake = model.discriminator(model.decoder(z_prior).reconstruction).embedding.flatten()
    # BCE(D(x), 1) + BCE(D(G(z)), 0) per image; torch's BCE clamps log at -100 as pythae's does
    discriminator_loss = F.binary_cross_entropy(
        d_real, torch.ones_like(d_real), reduction="none"
    ) + F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake), reduction="none")
    alpha = model.adversarial_loss_scale
    encoder_loss = kl + recon_loss
    decoder_loss = (1 - alpha) * recon_loss - alpha * discriminator_loss
    return BatchEval(
        x_hat=x_hat,
        per_image={
            "recon_loss": recon_loss,
            "kl": kl,
            "encoder_loss": encoder_loss,
            "decoder_loss": decoder_loss,
            "discriminator_loss": discriminator_loss,
            "total_loss": encoder_loss + decoder_loss + discriminator_loss,
            "disc_accuracy_real": (d_real > 0.5).float(),
            "disc_accuracy_fake": (d_fake < 0.5).float(),
        },
        stats={"mu": mu},
    )


def gated_forward(model: VAEGAN, inputs, **kwargs) -> dict[str, torch.Tensor]:
    """pythae's `VAEGAN.forward` for the vaebench engine: the same draws in the same order and
    the same losses, with the margin/equilibrium gates as 0-dim bool tensors on the device
    instead of Python branches on `.item()` (which would stop the host every step).
    `tests/test_engine.py` holds it equal to pythae's forward."""
    x = inputs["data"]
    mu, log_var, z = gaussian_posterior(model, x)
    recon_x = model.decoder(z).reconstruction
    z_prior = torch.randn_like(z, device=x.device).requires_grad_(True)
    n = z.shape[0]
    kld = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=-1)
    recon_loss = 0.5 * F.mse_loss(
        _features(model, x).reshape(n, -1),
        _features(model, recon_x).reshape(n, -1),
        reduction="none",
    ).sum(dim=-1)
    encoder_loss = kld + recon_loss
    gen_prior = model.decoder(z_prior).reconstruction
    true_score = model.discriminator(x).embedding.flatten()
    prior_score = model.discriminator(gen_prior).embedding.flatten()
    true_cost = _bce(true_score, torch.ones(n, device=x.device))
    prior_cost = _bce(prior_score, torch.zeros(n, device=x.device))
    discriminator_loss = true_cost + prior_cost
    alpha = model.adversarial_loss_scale
    decoder_loss = (1 - alpha) * recon_loss - alpha * discriminator_loss
    low, high = model.equilibrium - model.margin, model.equilibrium + model.margin
    update_discriminator = ~((true_cost < low) | (prior_cost < low))
    update_decoder = ~((true_cost > high) | (prior_cost > high))
    neither = ~update_decoder & ~update_discriminator  # pythae then updates both
    encoder_loss, decoder_loss = encoder_loss.mean(dim=0), decoder_loss.mean(dim=0)
    discriminator_loss = discriminator_loss.mean(dim=0)
    return {
        "loss": encoder_loss + decoder_loss + discriminator_loss,
        "recon_loss": recon_loss.mean(dim=0),
        "encoder_loss": encoder_loss,
        "decoder_loss": decoder_loss,
        "discriminator_loss": discriminator_loss,
        "update_encoder": torch.ones((), dtype=torch.bool, device=x.device),
        "update_decoder": update_decoder | neither,
        "update_discriminator": update_discriminator | neither,
    }


def _bce(score: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pythae's `F.binary_cross_entropy(score, target)`, in fp32 outside autocast (which CUDA
    refuses for BCE)."""
    with torch.autocast(device_type=score.device.type, enabled=False):
        return F.binary_cross_entropy(score.float(), target.float())


FAMILY = Family(
    name="vaegan",
    label="VAEGAN",
    column=0,  # the summary table reads VAEGAN | BetaVAE | VQVAE
    own_loss="discriminator-feature error",
    # measured in the discriminator's features, which move as it trains: its validation value
    # wanders by 10-20% between epochs after it has learned (fashion_mnist, 20 epochs)
    settles=False,
    latent="gaussian",
    pythae_name="VAEGAN",
    params_model=VAEGANParams,
    build=build,
    trainer_config=trainer_config,
    trainer_cls=CoupledOptimizerAdversarialTrainer,
    evaluate_batch=evaluate_batch,
    engine_forward=gated_forward,
    samplers=("normal", "gmm"),
    train_components=(
        "loss",
        "recon_loss",
        "encoder_loss",
        "decoder_loss",
        "discriminator_loss",
        "update_encoder",
        "update_decoder",
        "update_discriminator",
    ),
)
