"""VQVAE: pythae's VQVAE (quantiser with or without EMA) trained by its BaseTrainer."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from pythae.models import VQVAE, VQVAEConfig
from pythae.trainers import BaseTrainer

from benchmark.config import MAX_LEARNING_RATE, MAX_WIDTH, Section
from benchmark.models.family import (
    BatchEval,
    Family,
    base_trainer_config,
    pythae_config,
    sum_squared_error,
)
from benchmark.models.networks import CompactDecoder, CompactVQEncoder, pythae_networks


class VQVAEParams(Section):
    latent_dim: int = Field(16, ge=1, le=MAX_WIDTH)  # dimension of each codebook vector
    num_embeddings: int = Field(128, ge=2, le=65_536)
    commitment_loss_factor: float = Field(0.25, ge=0, le=10_000)
    quantization_loss_factor: float = Field(1.0, ge=0, le=10_000)
    use_ema: bool = False
    decay: float = Field(0.99, ge=0, le=1)
    # pythae 0.1.2 averages the VQ loss over the h*w*D latent elements of the batch, while its
    # reconstruction loss is a per-image sum over pixels: with the paper's factors (0.25, 1) the
    # encoder drifts away from the codebook (vq_loss grows by 10^4). "sum" multiplies both
    # factors by h*w*D of the encoder's output, so the VQ loss is a per-image sum like the
    # reconstruction loss, whatever the network and image size. "mean": pythae as it is.
    vq_loss_reduction: Literal["mean", "sum"] = "mean"
    learning_rate: float | None = Field(
        None, gt=0, le=MAX_LEARNING_RATE
    )  # None: train.learning_rate
    width: int = Field(32, ge=1, le=MAX_WIDTH)  # compact networks only


def latent_elements(encoder: torch.nn.Module, input_shape) -> int:
    """h*w*D of the encoder's output for one image (a zero probe in eval mode: no random
    draws and no BatchNorm statistics touched, so the model is initialised as pythae would)."""
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        embedding = encoder(torch.zeros((1, *input_shape))).embedding
    encoder.train(was_training)
    return embedding[0].numel()


def build(params: VQVAEParams, input_shape, arch: str) -> VQVAE:
    def config(scale: float = 1.0) -> VQVAEConfig:
        return pythae_config(
            VQVAEConfig,
            input_dim=tuple(input_shape),
            latent_dim=params.latent_dim,
            num_embeddings=params.num_embeddings,
            commitment_loss_factor=params.commitment_loss_factor * scale,
            quantization_loss_factor=params.quantization_loss_factor * scale,
            use_ema=params.use_ema,
            decay=params.decay,
        )

    if arch == "pythae":
        encoder = pythae_networks("vq_encoder", config())
        decoder = pythae_networks("vq_decoder", config())
    else:
        encoder = CompactVQEncoder(input_shape, params.latent_dim, params.width)
        decoder = CompactDecoder(input_shape, params.latent_dim, params.width, spatial=True)
    scale = latent_elements(encoder, input_shape) if params.vq_loss_reduction == "sum" else 1.0
    return VQVAE(config(scale), encoder=encoder, decoder=decoder)


def codebook(model: VQVAE) -> torch.Tensor:
    quantizer = model.quantizer
    return quantizer.embeddings if quantizer.model_config.use_ema else quantizer.embeddings.weight


def _encode(model: VQVAE, x: torch.Tensor):
    """The encoder's vectors as (B, h, w, D), the way pythae's forward lays them out."""
    embedding = model.encoder(x).embedding
    flat = embedding.dim() == 2
    if flat:
        embedding = embedding.reshape(embedding.shape[0], 1, 1, -1)
    return embedding.permute(0, 2, 3, 1), flat


def _decode(model: VQVAE, vectors: torch.Tensor, flat: bool) -> torch.Tensor:
    """vectors: (B, D, h, w) quantised map."""
    if flat:
        vectors = vectors.reshape(vectors.shape[0], -1)
    return model.decoder(vectors).reconstruction


def vq_loss_per_image(model: VQVAE, z: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """pythae 0.1.2's VQ loss uses a *mean* reduction over the whole batch (not a per-image sum
    like its reconstruction loss). Per image we take the same mean over that image's elements:
    the batch mean of these equals pythae's value. The factors are the model's own (scaled by
    the latent size under vq_loss_reduction=sum)."""
    squared = (quantized - z).pow(2).flatten(1).mean(dim=1)
    config = model.model_config
    factor = config.commitment_loss_factor
    if not config.use_ema:  # the EMA quantiser has no codebook loss term
        factor = factor + config.quantization_loss_factor
    return factor * squared


def evaluate_batch(model: VQVAE, x: torch.Tensor, params: VQVAEParams) -> BatchEval:
    z, flat = _encode(model, x)
    out = model.quantizer(z)  # eval mode: the EMA codebook is not updated
    codes = out.quantized_indices.flatten(1)  # (B, h*w)
    quantized = codebook(model)[codes].reshape(z.shape)
    x_hat = _decode(model, out.quantized_vector, flat)
    recon_loss = sum_squared_error(x, x_hat)
    vq_loss = vq_loss_per_image(model, z, quantized)
    return BatchEval(
        x_hat=x_hat,
        per_image={
            "recon_loss": recon_loss,
            "vq_loss": vq_loss,
            "total_loss": recon_loss + vq_loss,
        },
        stats={"codes": codes},
    )


def code_layout(model: VQVAE) -> tuple[int, int, bool]:
    """(h, w, flat) of the model's code maps: a zero probe through the encoder (eval mode); a
    flat encoder (a vector per image) has a 1x1 map and a decoder that takes vectors."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probe = torch.zeros((1, *model.model_config.input_dim), device=codebook(model).device)
        z, flat = _encode(model, probe)
    model.train(was_training)
    return z.shape[1], z.shape[2], flat


def code_maps(model: VQVAE, x: torch.Tensor) -> torch.Tensor:
    """The code index at every latent position: (B, h, w) long (eval mode: no EMA update)."""
    z, _ = _encode(model, x)
    return model.quantizer(z).quantized_indices.reshape(z.shape[:3])


def decode_codes(model: VQVAE, codes: torch.Tensor, flat: bool) -> torch.Tensor:
    """(B, h, w) code indices -> decoded images."""
    vectors = codebook(model)[codes].permute(0, 3, 1, 2)  # (B, D, h, w)
    return _decode(model, vectors, flat)


FAMILY = Family(
    name="vqvae",
    label="VQVAE",
    column=2,  # the summary table reads VAEGAN | BetaVAE | VQVAE
    own_loss="SSE",
    latent="discrete",
    pythae_name="VQVAE",
    params_model=VQVAEParams,
    build=build,
    trainer_config=base_trainer_config,
    trainer_cls=BaseTrainer,
    evaluate_batch=evaluate_batch,
    samplers=("prior", "uniform"),
    train_components=("loss", "recon_loss", "vq_loss"),
)
