"""Evaluation is pure and deterministic, and reports exactly the applicable metrics."""

from __future__ import annotations

import pytest
import torch

from benchmark.config import EvalConfig
from benchmark.metrics.distribution import DistributionReference, frechet_distance
from benchmark.metrics.evaluation import evaluate as evaluate_with
from benchmark.metrics.evaluation import evaluation_mode
from benchmark.metrics.registry import LPIPS, metrics_of
from benchmark.metrics.samplers import fit_sampler
from benchmark.models import FAMILIES
from conftest import random_set_features

SHAPE = (1, 28, 28)
COMMON = {"mse", "bce", "psnr", "ssim", "gmsd", "recon_loss", "total_loss"}
# docs/metrics.md applicability matrix (+ the extras)
APPLICABLE = {
    "betavae": COMMON | {"kl", "elbo", "active_units"},
    "vqvae": COMMON | {"vq_loss", "codebook_perplexity", "codebook_usage"},
    "vaegan": COMMON
    | {
        "kl",
        "elbo",
        "encoder_loss",
        "decoder_loss",
        "discriminator_loss",
        "active_units",
        "disc_accuracy_real",
        "disc_accuracy_fake",
    },
}


def make(name, **params):
    family = FAMILIES.get(name)
    parsed = family.params_model(width=8, **params)
    torch.manual_seed(0)
    return family, family.build(parsed, SHAPE, "compact"), parsed


def sample_images():
    return torch.randint(
        0, 256, (40, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )


def evaluate(family, model, params, images, config, lpips=None, reference=None, realism=None):
    """Fit the family's default sampler on `images` (tiny), then evaluate on them."""
    config = config.model_copy(update={"prior": config.prior.model_copy(update={"epochs": 1})})
    sampler = fit_sampler(family.samplers[0], model, params, images, images, config)
    loaded = {"lpips": lpips, "fid": reference, "classifier": realism}
    loaded = {name: it for name, it in loaded.items() if it is not None}
    return evaluate_with(family, model, params, images, config, sampler, loaded)


def random_reference(images) -> DistributionReference:
    features, _ = random_set_features()
    return DistributionReference(features, features(images))


@pytest.mark.parametrize("name", FAMILIES.names())
def test_exactly_the_applicable_metrics_are_reported(name):
    family, model, params = make(name)
    metrics, _ = evaluate(family, model, params, sample_images(), EvalConfig(n_gen=16))
    for prefix in ("recon/", "gen/"):
        keys = {k[len(prefix) :] for k in metrics if k.startswith(prefix)}
        assert keys == APPLICABLE[name]
    set_level = {"lpips", "fid", "kid", "cfd", "precision", "recall"}
    assert set(metrics_of(family)) == APPLICABLE[name] | set_level


def test_set_level_metrics_are_reported_when_features_are_given():
    family, model, params = make("vqvae")
    images = sample_images()
    metrics, _ = evaluate(
        family, model, params, images, EvalConfig(n_gen=16), reference=random_reference(images)
    )
    assert {k for k in metrics if k.endswith(("/fid", "/kid"))} == {
        "recon/fid",
        "gen/fid",
        "gen/kid",
    }
    # recon/fid is the Frechet distance of the reconstructions' features (made here, apart
    # from evaluate's batches) to the test features
    config = EvalConfig(n_gen=16)
    with evaluation_mode(model, config.seed):
        x_hat = family.evaluate_batch(model, images.float() / 255, params).x_hat.clamp(0, 1)
    reference = random_reference(images)
    expected = frechet_distance(reference.features(x_hat), reference.test_features)
    assert metrics["recon/fid"] == pytest.approx(expected, rel=1e-4)
    itself = reference.fid_of(reference.features(images.float() / 255))
    assert itself < expected / 100  # the test set to itself is ~0: this one compares sets
    assert metrics["gen/fid"] > 0 and metrics["gen/kid"] != 0


def test_classifier_metrics_are_reported_when_a_classifier_reference_is_given():
    """recon/cfd, gen/cfd, gen/precision, gen/recall; an untrained network stands in (tests
    only: a run uses the dataset's trained classifier, or none)."""
    from benchmark.metrics.classifier import (
        ClassifierNet,
        ClassifierReference,
        DatasetClassifier,
        recipe_for,
    )

    family, model, params = make("betavae")
    images = sample_images()
    recipe = recipe_for(tuple(images.shape[1:]), 10)
    net = ClassifierNet(recipe, images.shape[1])
    reference = ClassifierReference.of(DatasetClassifier(net, recipe, {}), images)
    metrics, _ = evaluate(family, model, params, images, EvalConfig(n_gen=16), realism=reference)
    keys = {k for k in metrics if k.endswith(("/cfd", "/precision", "/recall"))}
    assert keys == {"recon/cfd", "gen/cfd", "gen/precision", "gen/recall"}
    assert metrics["recon/cfd"] >= 0 and 0 <= metrics["gen/recall"] <= 1


def test_lpips_is_reported_when_a_network_is_given():
    family, model, params = make("betavae")
    lpips = LPIPS(backbone=None)  # tests only: never in a user-facing run
    metrics, _ = evaluate(
        family, model, params, sample_images()[:8], EvalConfig(n_gen=8), lpips=lpips
    )
    assert metrics["recon/lpips"] > 0 and metrics["gen/lpips"] >= 0


@pytest.mark.parametrize(
    ("name", "params"),
    [("betavae", {}), ("vqvae", {"use_ema": True}), ("vqvae", {}), ("vaegan", {})],
)
def test_evaluation_changes_nothing_and_repeats_exactly(name, params):
    family, model, parsed = make(name, **params)
    model.train()  # evaluation must switch to eval mode itself (EMA codebook!) and switch back
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    config = EvalConfig(n_gen=24, batch_size=16, seed=99)
    first, _ = evaluate(family, model, parsed, sample_images(), config)
    second, _ = evaluate(family, model, parsed, sample_images(), config)
    assert first == second
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert model.training
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    other, _ = evaluate(
        family, model, parsed, sample_images(), config.model_copy(update={"seed": 5})
    )
    if name != "vqvae":  # stochastic encoders: another seed, other draws
        assert other["recon/mse"] != first["recon/mse"]


def test_batch_size_does_not_change_deterministic_metrics():
    family, model, params = make("vqvae")
    small, _ = evaluate(family, model, params, sample_images(), EvalConfig(n_gen=8, batch_size=7))
    large, _ = evaluate(family, model, params, sample_images(), EvalConfig(n_gen=8, batch_size=40))
    for key in ("recon/mse", "recon/ssim", "recon/gmsd", "recon/vq_loss", "recon/codebook_usage"):
        assert small[key] == pytest.approx(large[key], rel=1e-5)
