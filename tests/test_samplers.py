"""Samplers: resolved per family from eval.sampler, fitted reproducibly, and used; the learned
VQVAE prior makes digits where uniform codes make texture (measured, tests/digit_features.py)."""

from __future__ import annotations

import pytest
import sklearn.mixture
import torch

from benchmark.config import EvalConfig
from benchmark.data.loading import load_image_splits
from benchmark.errors import UserInputError
from benchmark.metrics.evaluation import evaluate, evaluation_mode, generate
from benchmark.metrics.samplers import fit_sampler
from benchmark.models import FAMILIES
from benchmark.models.family import posterior_mean
from benchmark.running.suites import resolve_suite
from benchmark.train.training import train
from digit_features import digit_confidence, digit_fd, train_digit_classifier

SHAPE = (1, 28, 28)


def untrained(name: str, **params):
    family = FAMILIES.get(name)
    parsed = family.params_model(width=8, **params)
    torch.manual_seed(0)
    return family, family.build(parsed, SHAPE, "compact"), parsed


def images(n: int = 60, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=generator)


def trained_on_mnist_5k(model: str, epochs: int):
    """A quick-suite cell of `model`, trained for `epochs` as the runner trains it."""
    cell = resolve_suite("quick", overrides=[f"train.epochs={epochs}"], models=[model]).cells()[0]
    family = FAMILIES.get(cell.model)
    params = family.params_model(**cell.params)
    data = load_image_splits(cell.dataset, cell.data)
    torch.manual_seed(cell.seed)
    network = family.build(params, data.shape, cell.arch)
    train(family, network, data, cell, params)
    return cell, family, network, params, data


# ---- resolution ---------------------------------------------------------------------------------


def test_each_family_gets_its_default_sampler_and_the_cell_config_names_it():
    cells = {c.model: c for c in resolve_suite("quick").cells()}
    assert {m: c.eval.sampler for m, c in cells.items()} == {
        "betavae": "normal",
        "vqvae": "prior",
        "vaegan": "normal",
    }
    other = resolve_suite("quick", overrides=["eval.sampler.betavae=gmm"]).cells()
    changed = {c.model: c for c in other}
    assert changed["betavae"].eval.sampler == "gmm" and changed["vqvae"].eval.sampler == "prior"
    assert changed["betavae"].config_hash() != cells["betavae"].config_hash()
    assert changed["vqvae"].config_hash() == cells["vqvae"].config_hash()


def test_a_sampler_a_family_cannot_use_is_one_clear_line():
    with pytest.raises(UserInputError) as error:
        resolve_suite("quick", overrides=["eval.sampler=gmm"])
    assert str(error.value) == (
        "eval.sampler=gmm: vqvae samples with prior, uniform (default prior); for some "
        "families only: eval.sampler.MODEL=NAME"
    )
    with pytest.raises(UserInputError, match="unknown model 'betavea'; did you mean 'betavae'"):
        resolve_suite("quick", overrides=["eval.sampler.betavea=gmm"])
    gmm_everywhere = resolve_suite("quick", overrides=["eval.sampler=gmm"], models=["betavae"])
    assert gmm_everywhere.cells()[0].eval.sampler == "gmm"


# ---- fitting ------------------------------------------------------------------------------------


@pytest.fixture
def mixture_inputs(monkeypatch):
    """Every array a GaussianMixture is fitted on."""
    seen = []
    original = sklearn.mixture.GaussianMixture.fit

    def spy(self, X, y=None):
        seen.append(torch.as_tensor(X).double().clone())
        return original(self, X, y)

    monkeypatch.setattr(sklearn.mixture.GaussianMixture, "fit", spy)
    return seen


def test_quirk_pythaes_gmm_sampler_fits_unseeded_samples_of_q_not_the_means(mixture_inputs):
    from pythae.samplers import GaussianMixtureSampler, GaussianMixtureSamplerConfig

    _, model, _ = untrained("betavae")
    data = images().float() / 255
    for _ in range(2):
        GaussianMixtureSampler(model, GaussianMixtureSamplerConfig(n_components=2)).fit(data)
    with torch.no_grad():
        means = posterior_mean(model, data).double()
    assert not torch.allclose(mixture_inputs[0], means, atol=1e-4)  # z ~ q(z|x), not E_q[z]
    assert not torch.equal(mixture_inputs[0], mixture_inputs[1])  # a new draw each fit


def test_gmm_sampler_is_fitted_on_posterior_means_and_its_draws_are_decoded(mixture_inputs):
    family, model, params = untrained("betavae")
    data = images(200)
    config = EvalConfig(gmm_components=3)
    sampler = fit_sampler("gmm", model, params, data, images(40, seed=1), config)
    with torch.no_grad():
        means = posterior_mean(model, data.float() / 255).double()
    assert torch.allclose(mixture_inputs[0], means, atol=1e-6)
    described = sampler.describe()
    assert described["name"] == "gmm" and described["settings"]["components"] == 3
    assert described["converged"] and described["n_fit"] == 200 and described["fit_seconds"] > 0

    decoded = []  # what reaches the decoder: draws of the fitted mixture
    original = model.decoder.forward
    model.decoder.forward = lambda z: decoded.append(z.double()) or original(z)
    with evaluation_mode(model, config.seed):
        generate(sampler, 4000, 1000)
    z = torch.cat(decoded)
    assert z.shape == (4000, params.latent_dim)
    # the draws have the posterior means' statistics, not N(0, I)'s
    assert torch.allclose(z.mean(0), means.mean(0), atol=5 * means.std(0).max() / 4000**0.5)
    assert torch.allclose(z.std(0), means.std(0), rtol=0.1)
    assert (means.std(0) < 0.5).all()  # an untrained encoder: far narrower than N(0, I)


def test_fits_are_reproducible_and_leave_the_random_state_alone():
    family, model, params = untrained("vqvae", num_embeddings=16)
    config = EvalConfig(prior={"epochs": 2, "layers": 2, "channels": 8})
    state = torch.random.get_rng_state()
    first = fit_sampler("prior", model, params, images(), images(20, seed=1), config)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = fit_sampler("prior", model, params, images(), images(20, seed=1), config)
    assert first.describe()["train_nll_bits"] == second.describe()["train_nll_bits"]
    draws = []
    for sampler in (first, second):
        with evaluation_mode(model, config.seed):
            draws.append(generate(sampler, 10, 5))
    assert torch.equal(draws[0], draws[1])


# ---- the learned prior against uniform codes, on real digits ------------------------------------


@pytest.fixture(scope="module")
def digit_classifier():
    data = load_image_splits("mnist-5k", resolve_suite("quick").data)
    classifier, accuracy = train_digit_classifier(data.test)
    assert accuracy > 0.9  # the features mean something about digits
    return classifier


def test_the_learned_code_prior_makes_digits_uniform_codes_do_not(digit_classifier):
    cell, family, model, params, data = trained_on_mnist_5k("vqvae", epochs=10)
    scores = {}
    for name in ("prior", "uniform"):
        sampler = fit_sampler(name, model, params, data.train, data.test, cell.eval)
        with evaluation_mode(model, cell.eval.seed):
            samples = generate(sampler, len(data.test), cell.eval.batch_size)
        scores[name] = (digit_fd(digit_classifier, samples, data.test), sampler.describe())
    prior_fd, prior = scores["prior"]
    uniform_fd, _ = scores["uniform"]
    assert prior["test_nll_bits"] < prior["uniform_nll_bits"] - 1  # it learned the code maps
    assert prior_fd < 0.5 * uniform_fd, scores


@pytest.mark.slow
def test_quick_suite_gen_table_per_sampler(digit_classifier, capsys):
    """The quick suite's three cells as `vaebench run` trains them, then every sampler of each
    family: its gen/ pixel metrics and the digit-feature distance (`pytest -m slow -s`)."""
    rows = []
    for model in ("vaegan", "betavae", "vqvae"):
        cell, family, network, params, data = trained_on_mnist_5k(model, epochs=30)
        for name in family.samplers:
            sampler = fit_sampler(name, network, params, data.train, data.test, cell.eval)
            metrics, _ = evaluate(family, network, params, data.test, cell.eval, sampler)
            with evaluation_mode(network, cell.eval.seed):
                samples = generate(sampler, len(data.test), cell.eval.batch_size)
            rows.append(
                (
                    family.label,
                    name,
                    digit_fd(digit_classifier, samples, data.test),
                    digit_confidence(digit_classifier, samples),
                    metrics["gen/mse"],
                    metrics["gen/ssim"],
                    sampler.fit_seconds,
                )
            )
    with capsys.disabled():
        print("\n| family | sampler | digit FD | digit confidence | gen/mse | gen/ssim | fit s |")
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            print("| {} | `{}` | {:.3f} | {:.3f} | {:.2f} | {:.4f} | {:.1f} |".format(*row))
    by_name = {(r[0], r[1]): r[2] for r in rows}
    assert by_name[("VQVAE", "prior")] < 0.5 * by_name[("VQVAE", "uniform")]
