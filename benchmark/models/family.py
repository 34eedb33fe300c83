"""What every model family provides to the rest of the benchmark.

A family composes a pythae model: it builds it, says which pythae trainer trains it, and knows
how to compute its own per-image losses (pythae only returns batch means) and how to sample
its prior. Nothing here subclasses a pythae model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pythae.models import BaseAE

from benchmark.config import Section, TrainConfig


@dataclass
class BatchEval:
    """Per-image evaluation of one batch: reconstructions, losses (shape (N,)), statistics."""

    x_hat: torch.Tensor
    per_image: dict[str, torch.Tensor]
    # set-level statistics gathered over batches: "mu" (N, latent) or "codes" (N, positions)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    name: str
    pythae_name: str
    params_model: type[Section]
    build: Callable[[Any, tuple[int, int, int], str], BaseAE]
    # (params, train, seed, output_dir, device) -> the pythae trainer config
    trainer_config: Callable[..., Any]
    trainer_cls: type  # the pythae trainer class that trains this family
    evaluate_batch: Callable[[BaseAE, torch.Tensor, Any], BatchEval]
    # names of the samplers that apply (benchmark/metrics/samplers.py); the first is the default
    samplers: tuple[str, ...]
    # loss components pythae's forward returns for this family, as named in its ModelOutput
    train_components: tuple[str, ...]
    # display, read by the report: its name there, its column (lower first), and its latent:
    # a Gaussian posterior (kl, elbo and active units apply, and rank only between Gaussian
    # families), discrete codes, or a deterministic code
    label: str = ""
    column: int = 100
    latent: Literal["gaussian", "discrete", "deterministic"] = "gaussian"
    # what its own `recon_loss` is, for the report's note on the families' own losses
    own_loss: str = ""
    # whether its validation reconstruction loss settles as it learns (the report's "still
    # improving" check reads it); an adversarial family's own loss is measured in features
    # that move as its discriminator trains, so it wanders and is not read
    settles: bool = True
    # train.engine=vaebench: the training forward, (model, inputs, **pythae's kwargs) -> its
    # loss components as tensors, none of them read on the host. None: the model's own forward
    engine_forward: Callable[..., Any] | None = None

    def make_trainer(
        self,
        model,
        train_ds,
        val_ds,
        params,
        train: TrainConfig,
        seed: int,
        output_dir: str,
        device: str,
        callbacks=None,
    ):
        """The family's pythae trainer, with the config pythae's TrainingPipeline would get."""
        config = self.trainer_config(params, train, seed, output_dir, device)
        return self.trainer_cls(
            model, train_ds, val_ds, training_config=config, callbacks=callbacks
        )


def pythae_config(cls: type, **values: Any) -> Any:
    """Build a pythae config and check that every value reached it.

    pythae's pydantic dataclasses silently drop unknown keyword arguments, so a typo would train
    with a default. Our own configs reject unknown keys; this is the second line of defence.
    """
    config = cls(**values)
    dropped = [key for key in values if not hasattr(config, key)]
    if dropped:
        raise TypeError(f"{cls.__name__} does not know {dropped}; pythae would ignore them")
    return config


def base_trainer_values(train: TrainConfig, seed: int, output_dir: str, device: str) -> dict:
    return dict(
        output_dir=output_dir,
        num_epochs=train.epochs,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=max(train.batch_size, 256),
        seed=seed,
        no_cuda=device != "cuda",
        steps_saving=None,  # no checkpoints mid-training: the benchmark evaluates the final model
        keep_best_on_train=False,
    )


def optimizer_params(train: TrainConfig, device: str) -> dict | None:
    """On CUDA, Adam and AdamW update all parameters in one fused kernel per step instead of a
    few multi-tensor launches (small networks are launch-bound there); the same update up to
    float rounding. On the CPU the gain was within noise, so the CPU keeps torch's default."""
    if device == "cuda" and train.optimizer in ("Adam", "AdamW"):
        return {"fused": True}
    return None


def base_trainer_config(params, train: TrainConfig, seed: int, output_dir: str, device: str):
    """pythae's BaseTrainer with one optimizer (BetaVAE, VQVAE)."""
    from pythae.trainers import BaseTrainerConfig

    return pythae_config(
        BaseTrainerConfig,
        **base_trainer_values(train, seed, output_dir, device),
        learning_rate=params.learning_rate or train.learning_rate,
        optimizer_cls=train.optimizer,
        optimizer_params=optimizer_params(train, device),
    )


def gaussian_posterior(model: BaseAE, x: torch.Tensor):
    """mu, log_var and a reparameterised z ~ q(z|x), drawn as pythae's forward draws it."""
    encoded = model.encoder(x)
    mu, log_var = encoded.embedding, encoded.log_covariance
    std = torch.exp(0.5 * log_var)
    z = mu + torch.randn_like(std) * std
    return mu, log_var, z


@contextmanager
def at_rest(model: BaseAE, seed: int) -> Iterator[None]:
    """`model` in eval mode (no EMA codebook update, no dropout) under its own seed; its mode
    and the global RNG state (CPU and CUDA) as they were afterwards. Fitting a sampler and
    evaluating both run under it, so neither moves a later cell's randomness."""
    was_training = model.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)


def posterior_mean(model: BaseAE, x: torch.Tensor) -> torch.Tensor:
    """E_q[z | x] of a Gaussian encoder (BetaVAE, VAEGAN)."""
    return model.encoder(x).embedding


def decode_latent(model: BaseAE, z: torch.Tensor) -> torch.Tensor:
    return model.decoder(z).reconstruction


def kl_per_image(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    return -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=-1)


def sum_squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return (x_hat - x).pow(2).flatten(1).sum(dim=1)
