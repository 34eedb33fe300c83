"""A fourth family, defined in this one file and nowhere in the package: pythae's RAE
(Ghosh et al. 2020, a regularised deterministic autoencoder), trained by pythae's BaseTrainer.

`tests/test_extension.py` registers it, then trains, evaluates, reports and compares it end
to end: what it costs to add a family to vaebench is this file.
"""

from __future__ import annotations

import torch
from pydantic import Field
from pythae.models import RAE_L2, RAE_L2_Config
from pythae.trainers import BaseTrainer

from benchmark.config import Section
from benchmark.models.family import (
    BatchEval,
    Family,
    base_trainer_config,
    pythae_config,
    sum_squared_error,
)
from benchmark.models.networks import CompactDecoder, CompactGaussianEncoder, pythae_networks


class RAEParams(Section):
    latent_dim: int = Field(16, ge=1, le=4096)
    embedding_weight: float = Field(1e-2, ge=0)  # the weight of 0.5 ||z||^2
    learning_rate: float | None = None  # None: train.learning_rate
    width: int = Field(32, ge=1, le=4096)  # compact networks only


def build(params: RAEParams, input_shape, arch: str) -> RAE_L2:
    config = pythae_config(
        RAE_L2_Config,
        input_dim=tuple(input_shape),
        latent_dim=params.latent_dim,
        embedding_weight=params.embedding_weight,
    )
    if arch == "pythae":
        encoder = pythae_networks("encoder", config)
        decoder = pythae_networks("decoder", config)
    else:  # its log-covariance head is never read: the RAE's code is the embedding
        encoder = CompactGaussianEncoder(input_shape, params.latent_dim, params.width)
        decoder = CompactDecoder(input_shape, params.latent_dim, params.width)
    return RAE_L2(config, encoder=encoder, decoder=decoder)


def evaluate_batch(model: RAE_L2, x: torch.Tensor, params: RAEParams) -> BatchEval:
    """Per image, as RAE_L2.loss_function computes them before its batch mean (the decoder's
    L2 penalty is weight decay in pythae's coupled trainer; BaseTrainer has none)."""
    z = model.encoder(x).embedding
    x_hat = model.decoder(z).reconstruction
    recon_loss = sum_squared_error(x, x_hat)
    embedding_loss = 0.5 * torch.linalg.norm(z, dim=-1) ** 2
    return BatchEval(
        x_hat=x_hat,
        per_image={
            "recon_loss": recon_loss,
            "total_loss": recon_loss + params.embedding_weight * embedding_loss,
        },
    )


FAMILY = Family(
    name="rae",
    label="RAE",
    column=3,  # after VAEGAN | BetaVAE | VQVAE
    own_loss="SSE",
    latent="deterministic",  # no kl, elbo or active units
    pythae_name="RAE_L2",
    params_model=RAEParams,
    build=build,
    trainer_config=base_trainer_config,
    trainer_cls=BaseTrainer,
    evaluate_batch=evaluate_batch,
    samplers=("gmm", "normal"),  # the RAE paper's ex-post density: a GMM on the codes
    train_components=("loss", "recon_loss", "embedding_loss"),
)
