"""The model families over the whole registry, and the pythae quirks each one handles."""

from __future__ import annotations

import pytest
import torch
from pythae.data.datasets import DatasetOutput
from pythae.models import BetaVAEConfig
from pythae.trainers import BaseTrainer, CoupledOptimizerAdversarialTrainer

from benchmark.config import EvalConfig, TrainConfig
from benchmark.metrics.samplers import fit_sampler
from benchmark.models import FAMILIES
from benchmark.models.family import pythae_config
from benchmark.train.training import UInt8Images

SHAPE = (1, 28, 28)
# the per-image keys whose batch mean must equal pythae's own forward, per family:
# (our key, pythae's ModelOutput key)
PYTHAE_KEYS = {
    "betavae": [("recon_loss", "recon_loss"), ("kl", "reg_loss"), ("total_loss", "loss")],
    "vqvae": [("recon_loss", "recon_loss"), ("vq_loss", "vq_loss"), ("total_loss", "loss")],
    "vaegan": [
        ("recon_loss", "recon_loss"),
        ("encoder_loss", "encoder_loss"),
        ("decoder_loss", "decoder_loss"),
        ("discriminator_loss", "discriminator_loss"),
        ("total_loss", "loss"),
    ],
}
VARIANTS = [
    ("betavae", {"beta": 2.5, "width": 8}),
    ("betavae", {"reconstruction_loss": "bce", "width": 8}),
    ("vqvae", {"num_embeddings": 16, "width": 8}),
    ("vqvae", {"num_embeddings": 16, "width": 8, "use_ema": True}),
    ("vqvae", {"num_embeddings": 16, "width": 8, "use_ema": True, "vq_loss_reduction": "sum"}),
    ("vaegan", {"adversarial_loss_scale": 0.3, "width": 8}),
]


def build(name: str, arch: str = "compact", **params):
    family = FAMILIES.get(name)
    parsed = family.params_model(**params)
    torch.manual_seed(0)
    return family, family.build(parsed, SHAPE, arch), parsed


def images(n=12, seed=0):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("name", "params"), VARIANTS)
def test_per_image_losses_average_to_pythaes_own_batch_losses(name, params):
    family, model, parsed = build(name, **params)
    model.eval()
    x = images()
    with torch.no_grad():
        torch.manual_seed(7)
        theirs = model(DatasetOutput(data=x))
        torch.manual_seed(7)  # same draws, same order
        ours = family.evaluate_batch(model, x, parsed)
    for our_key, their_key in PYTHAE_KEYS[name]:
        assert ours.per_image[our_key].shape == (12,)
        assert ours.per_image[our_key].mean().item() == pytest.approx(
            theirs[their_key].item(), rel=1e-5, abs=1e-6
        ), our_key
    assert torch.allclose(ours.x_hat, theirs.recon_x, atol=1e-6)


@pytest.mark.parametrize("name", FAMILIES.names())
@pytest.mark.parametrize("arch", ["compact", "pythae"])
def test_every_family_builds_and_samples_with_each_of_its_samplers(name, arch):
    family, model, parsed = build(name, arch)
    config = EvalConfig(prior={"epochs": 1, "layers": 2, "channels": 8}, gmm_components=2)
    for sampler_name in family.samplers:
        sampler = fit_sampler(sampler_name, model, parsed, images(12), images(6), config)
        model.eval()
        with torch.no_grad():
            samples = sampler.draw(5)
        assert samples.shape == (5, *SHAPE), sampler_name
    with torch.no_grad():
        out = family.evaluate_batch(model, images(3), parsed)
    assert out.x_hat.shape == (3, *SHAPE)


@pytest.mark.parametrize("name", FAMILIES.names())
def test_train_components_are_the_names_pythae_returns(name):
    """Quirk: loss names differ per family (reg_loss, vq_loss, encoder_loss...)."""
    family, model, _ = build(name)
    output = model(DatasetOutput(data=images(4)))
    assert set(family.train_components) <= set(output.keys())
    other_losses = {"reg_loss", "vq_loss", "encoder_loss"} - set(family.train_components)
    assert not other_losses & set(output.keys())


def test_pythae_configs_silently_drop_unknown_keys_and_we_refuse_them():
    """Quirk: pythae's pydantic dataclasses accept and ignore a misspelt key."""
    config = BetaVAEConfig(input_dim=SHAPE, latent_dim=4, betta=8.0)
    assert not hasattr(config, "betta") and config.beta == 1.0
    with pytest.raises(TypeError, match="betta"):
        pythae_config(BetaVAEConfig, input_dim=SHAPE, latent_dim=4, betta=8.0)


def _trainer(name, tmp_path, **params):
    family, model, parsed = build(name, **params)
    data = UInt8Images(torch.randint(0, 256, (64, *SHAPE), dtype=torch.uint8))
    train = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-3)
    return family.make_trainer(model, data, None, parsed, train, 0, str(tmp_path), "cpu", None)


def test_vaegan_uses_the_coupled_optimizer_trainer(tmp_path):
    """Quirk: VAEGAN needs one optimizer per network and the margin/equilibrium gates."""
    trainer = _trainer("vaegan", tmp_path, width=8, encoder_learning_rate=3e-4)
    assert isinstance(trainer, CoupledOptimizerAdversarialTrainer)
    trainer.set_encoder_optimizer()
    trainer.set_discriminator_optimizer()
    encoder_params = {id(p) for p in trainer.model.encoder.parameters()}
    optimised = {id(p) for g in trainer.encoder_optimizer.param_groups for p in g["params"]}
    assert optimised == encoder_params
    assert trainer.encoder_optimizer.param_groups[0]["lr"] == 3e-4
    assert trainer.discriminator_optimizer.param_groups[0]["lr"] == 1e-3
    for name in ("betavae", "vqvae"):
        trainer = _trainer(name, tmp_path, width=8)
        assert type(trainer) is BaseTrainer


def vq_forward(model):
    """pythae's forward in eval mode, the encoder's vectors z and their codebook vectors q."""
    model.eval()
    x = images()
    with torch.no_grad():
        output = model(DatasetOutput(data=x))
        z = model.encoder(x).embedding.permute(0, 2, 3, 1)
        q = model.quantizer.embeddings.weight[output.quantized_indices.flatten(1)].reshape(z.shape)
    return output, z, q


def test_vqvae_vq_loss_is_a_mean_not_a_per_image_sum():
    """Quirk: pythae 0.1.2's VQ loss is (beta + gamma) * mean((q - z)^2) over the whole batch,
    while its reconstruction loss is a per-image sum."""
    family, model, parsed = build("vqvae", num_embeddings=16, width=8)
    output, z, q = vq_forward(model)
    factor = parsed.commitment_loss_factor + parsed.quantization_loss_factor
    mean_form = factor * (q - z).pow(2).mean()
    sum_form = factor * (q - z).pow(2).flatten(1).sum(1).mean()
    assert output.vq_loss.item() == pytest.approx(mean_form.item(), rel=1e-5)
    assert output.vq_loss.item() < sum_form.item() / 10


@pytest.mark.parametrize("arch", ["compact", "pythae"])
def test_vq_loss_reduction_sum_makes_the_vq_loss_a_per_image_sum(arch):
    """The correction of the quirk above: both factors times h*w*D of the encoder's output, so
    pythae's own VQ loss becomes the paper's per-image sum; the model is otherwise the one
    pythae builds (the probe draws no random numbers)."""
    _, mean_model, _ = build("vqvae", arch, num_embeddings=16, width=8)
    family, model, parsed = build(
        "vqvae", arch, num_embeddings=16, width=8, vq_loss_reduction="sum"
    )
    theirs = mean_model.state_dict()
    assert all(torch.equal(value, theirs[key]) for key, value in model.state_dict().items())
    output, z, q = vq_forward(model)
    elements = z[0].numel()  # 7*7*16 (compact), 4*4*16 (pythae's MNIST networks)
    assert model.quantizer.commitment_loss_factor == 0.25 * elements
    per_image_sum = (0.25 + 1.0) * (q - z).pow(2).flatten(1).sum(1).mean()
    assert output.vq_loss.item() == pytest.approx(per_image_sum.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["betavae", "vqvae", "vaegan"])
def test_adam_is_fused_on_cuda_and_left_as_torch_has_it_on_the_cpu(name, tmp_path):
    family = FAMILIES.get(name)
    params = family.params_model()
    train = TrainConfig(epochs=1, batch_size=16)

    def optimizer_params(device: str, train=train) -> list:
        config = vars(family.trainer_config(params, train, 0, str(tmp_path), device))
        keys = [k for k in config if k.endswith("optimizer_params")]
        # the coupled trainer reads one per network, the base trainer the unprefixed one
        return [config[k] for k in ([k for k in keys if k != "optimizer_params"] or keys)]

    cuda, cpu = optimizer_params("cuda"), optimizer_params("cpu")
    assert cuda and all(p == {"fused": True} for p in cuda)
    assert all(p is None for p in cpu)
    assert all(p is None for p in optimizer_params("cuda", TrainConfig(optimizer="SGD")))
