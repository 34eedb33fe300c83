"""Every built-in suite makes every family learn on its own networks: a few epochs on real
MNIST (mnist-5k) keep the losses finite and bounded and beat the same network untrained.

Each distinct family configuration of the built-in suites is one case (the paper and nightly
suites share theirs), trained on a CPU-sized budget for its networks. pythae's networks cost
~25 ms an image (VAEGAN) on a 2-core CPU, so their budget is in steps, not epochs of MNIST.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmark.data.loading import load_image_splits
from benchmark.metrics.evaluation import evaluate
from benchmark.metrics.samplers import fit_sampler
from benchmark.models import FAMILIES
from benchmark.running import cell as one_cell
from benchmark.running import resources
from benchmark.running.suites import builtin_suites, expand_cells, read_suite_file, resolve_suite

EVALUATION = ["data.max_test=200", "eval.n_gen=50", "eval.lpips=false"]
BUDGET = {  # (networks, family) -> overrides; (networks, None) for the other families
    ("compact", None): ["train.epochs=5"],
    ("pythae", None): ["data.max_train=800", "train.batch_size=50", "train.epochs=3"],
    ("pythae", "vqvae"): ["data.max_train=800", "train.batch_size=50", "train.epochs=10"],
}
# pythae 0.1.2's default VQ settings reach a vq_loss of 10^3 within these budgets
LOSS_BOUND = 100.0


def learning_cases() -> list:
    cases: dict[str, tuple] = {}
    for name in builtin_suites():
        arch = read_suite_file(name).get("arch", "compact")
        for model in resolve_suite(name).models:
            budget = BUDGET.get((arch, model), BUDGET[(arch, None)])
            suite = resolve_suite(
                name, [*EVALUATION, *budget], models=[model], datasets=["mnist-5k"], seeds=[0]
            )
            cell = expand_cells(suite)[0]
            # one case per training setting: suites that differ only in how many images they
            # take (two-datasets' data.max_train) train the same way
            same = json.dumps(
                cell.model_dump(mode="json", exclude={"suite", "data"}), sort_keys=True
            )
            cases.setdefault(same, (cell, []))[1].append(name)
    # pythae's networks take 15-130 s a family on this CPU: behind the `slow` marker, which CI
    # runs after the default tests (`pytest -m slow`)
    return [
        pytest.param(
            cell,
            id=f"{'+'.join(suites)}-{cell.model}",
            marks=[pytest.mark.slow] if cell.arch == "pythae" else [],
        )
        for cell, suites in cases.values()
    ]


def test_every_built_in_suite_and_family_is_covered():
    ids = {case.id for case in learning_cases()}
    for suite in builtin_suites():
        for model in resolve_suite(suite).models:
            assert any(suite in i.rsplit("-", 1)[0].split("+") and i.endswith(model) for i in ids)


@pytest.mark.parametrize("cell", learning_cases())
def test_trained_models_learn_with_bounded_losses(cell, tmp_path):
    not_needed = lambda device, *options: (None, "not needed")  # noqa: E731
    networks = resources.MetricNetworks(not_needed, not_needed)
    shared = resources.SharedResources(resources.RunSettings(None, networks))
    record = one_cell.run_cell(cell, shared, lambda m: None, tmp_path)
    assert record.status == "ok", record.error
    for epoch in record.training["epochs"]:
        for key, value in epoch.items():
            if key.startswith(("train/", "val/")) and not key.startswith("train/update_"):
                assert math.isfinite(value) and abs(value) < 1e5, (key, epoch)
        if "train/vq_loss" in epoch:  # the drift of pythae's default VQ settings
            assert epoch["train/vq_loss"] < LOSS_BOUND, epoch

    family = FAMILIES.get(cell.model)
    params = family.params_model(**cell.params)
    data = load_image_splits(cell.dataset, cell.data)
    torch.manual_seed(cell.seed)
    untrained = family.build(params, data.shape, cell.arch)
    unfitted = next(name for name in family.samplers if name in ("normal", "uniform"))
    sampler = fit_sampler(unfitted, untrained, params, data.train, data.test, cell.eval)
    baseline, _ = evaluate(family, untrained, params, data.test, cell.eval, sampler)
    trained = record.metrics
    assert trained["recon/ssim"] > baseline["recon/ssim"] + 0.08, (trained, baseline)
    assert trained["recon/mse"] < 0.75 * baseline["recon/mse"], (trained, baseline)
