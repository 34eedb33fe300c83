"""The quick suite's models are real: a few epochs on real MNIST beat an untrained model."""

from __future__ import annotations

import torch

from benchmark import runner
from benchmark.data import load_image_splits
from benchmark.evaluation import evaluate
from benchmark.models import FAMILIES
from benchmark.suites import expand_cells, resolve_suite

SETTINGS = [
    "train.epochs=5",
    "data.max_test=200",
    "eval.n_gen=50",
    "eval.lpips=false",
]


def test_trained_models_reconstruct_far_better_than_untrained_ones(tmp_path):
    suite = resolve_suite("quick", SETTINGS)  # the quick suite's networks, on mnist-5k
    records = runner.run_suite(suite, tmp_path, log=lambda m: None)
    data = load_image_splits("mnist-5k", suite.data)
    for record, cell in zip(records, expand_cells(suite), strict=True):
        family = FAMILIES.get(cell.model)
        params = family.params_model(**cell.params)
        torch.manual_seed(cell.seed)
        untrained = family.build(params, data.shape, cell.arch)
        baseline, _ = evaluate(family, untrained, params, data.test, cell.eval)
        trained = record["metrics"]
        assert trained["recon/ssim"] > baseline["recon/ssim"] + 0.15, cell.model
        assert trained["recon/mse"] < 0.7 * baseline["recon/mse"], cell.model
