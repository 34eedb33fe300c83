"""`vaebench perf` and the speed-ups it measures: same results as stock pythae, well-formed JSON.
(No timing is asserted: timings on shared machines are noise.)"""

from __future__ import annotations

import json

import pytest

from benchmark.cli import main
from benchmark.data.loading import load_image_splits
from benchmark.models import FAMILIES
from benchmark.perf import training as perf_training
from benchmark.perf.training import _ours, _stock_pipeline
from benchmark.running.suites import expand_cells, resolve_suite
from conftest import TINY_SETTINGS


@pytest.mark.parametrize(
    ("model", "extra"), [("betavae", []), ("vaegan", []), ("vqvae", ["vqvae.use_ema=false"])]
)
def test_our_runner_gives_stock_pythaes_losses_step_by_step(model, extra, parquet_repo):
    """Batch loading and the step hook change speed, not results. (With an EMA codebook the
    stock pipeline's extra dataset checks shift which batch pythae's training-mode sanity
    check sees, and that forward moves the codebook: so VQVAE is compared without EMA.)"""
    suite = resolve_suite(
        "quick",
        [*TINY_SETTINGS, "train.epochs=2", *extra],
        models=[model],
        datasets=[str(parquet_repo)],
    )
    cell = expand_cells(suite)[0]
    family = FAMILIES.get(model)
    params = family.params_model(**cell.params)
    data = load_image_splits(cell.dataset, cell.data)
    stock = _stock_pipeline(family, cell, params, data)
    ours = _ours(family, cell, params, data)
    assert len(stock) == len(ours) == 2 * -(-len(data.train) // 32)
    assert stock == ours


def test_perf_command_emits_well_formed_json(parquet_repo, tmp_path, capsys, monkeypatch):
    # an option this CPU cannot run: it must become a row of its own, not a crash
    monkeypatch.setitem(perf_training.SPEED_OPTIONS, "on cuda", {"device": "cuda"})
    out = tmp_path / "perf.json"
    sets = [a for s in [*TINY_SETTINGS, "data.max_train=64"] for a in ("--set", s)]
    args = ["perf", "--repeats", "1", "--no-cell", "--jobs", "2", "--out", str(out), *sets]
    args += ["--engine-modes", "off"]  # the eager engine (compiling is tested in test_engine)
    code = main([*args, "--datasets", str(parquet_repo)])
    assert code == 0
    results = json.loads(out.read_text())
    assert set(results["training"]) == {"betavae", "vqvae", "vaegan"}
    for entry in results["training"].values():
        assert entry["stock_images_per_s"] > 0 and entry["ours_images_per_s"] > 0
        assert entry["ratio"] == pytest.approx(
            entry["ours_images_per_s"] / entry["stock_images_per_s"]
        )
        options = entry["options"]
        assert set(options) == {
            "channels_last",
            "bf16",
            "bf16 + channels_last",
            "engine",
            "on cuda",
        }
        assert "no CUDA device" in options.pop("on cuda")["error"]
        for option in options.values():
            assert option["images_per_s"] > 0 and option["error"] is None
            assert 0 <= option["max_loss_deviation_first_steps"] < 0.05
            assert option["ratio_to_fp32"] == pytest.approx(
                option["images_per_s"] / entry["ours_images_per_s"]
            )
            assert option["slower_than_fp32"] == (option["ratio_to_fp32"] < 1)
    jobs = results["jobs"]
    assert jobs["cells"] == 3 and jobs["jobs"] == 2 and jobs["speedup"] > 0
    assert jobs["failed"] == {"sequential": [], "parallel": []}
    assert results["matmul_flops_per_s"] > 0
    for entry in results["flops"].values():
        assert entry["flops_per_image"] > 0 and entry["fraction_of_matmul_rate"] > 0
    assert {"pixel (mse, bce, psnr)", "ssim + gmsd", "lpips (vgg16)", "betavae losses"} <= set(
        results["evaluation_images_per_s"]
    )
    for cost in results["step_cost"].values():
        assert cost["batch_size"] == 4 and cost["errors"] == {}
        assert set(cost["ms_per_step"]) == {"stock", "ours", "engine"}
        assert all(ms > 0 for ms in cost["ms_per_step"].values())
    printed = capsys.readouterr().out
    assert "| betavae |" in printed and "| vqvae | on cuda | failed: RuntimeError" in printed
    assert "| ms per step, batch 4 | stock pythae | ours (pythae's trainer) | engine |" in printed
    assert "--jobs 2" in printed


def our_steps(model: str, parquet_repo, *overrides: str) -> list[dict]:
    """Per-step losses of our runner on the tiny dataset."""
    suite = resolve_suite(
        "quick", [*TINY_SETTINGS, *overrides], models=[model], datasets=[str(parquet_repo)]
    )
    cell = expand_cells(suite)[0]
    family = FAMILIES.get(model)
    params = family.params_model(**cell.params)
    return _ours(family, cell, params, load_image_splits(cell.dataset, cell.data))


@pytest.mark.parametrize("model", ["betavae", "vqvae", "vaegan"])
def test_channels_last_changes_speed_not_results(model, parquet_repo):
    default = our_steps(model, parquet_repo, "train.epochs=2", "train.channels_last=false")
    nhwc = our_steps(model, parquet_repo, "train.epochs=2", "train.channels_last=true")
    assert len(default) == len(nhwc)
    for a, b in zip(default, nhwc, strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-4), key


@pytest.mark.parametrize("model", ["betavae", "vqvae", "vaegan"])
def test_bf16_autocast_trains_like_fp32(model, parquet_repo):
    """bf16 rounds differently, so the losses are close rather than equal; and the weights the
    forward sees must move (one autocast region around the whole loop freezes them: flat loss)."""

    def losses(precision: str) -> list[float]:
        steps = our_steps(model, parquet_repo, "train.epochs=3", f"train.precision={precision}")
        return [step["train/loss"] for step in steps]

    fp32, bf16 = losses("fp32"), losses("bf16")
    assert bf16 == pytest.approx(fp32, rel=0.01)
    assert max(bf16) - min(bf16) > 0.02 * abs(bf16[0])  # the forward sees updated weights


def test_an_unknown_engine_mode_is_one_line(capsys):
    assert main(["perf", "--engine-modes", "turbo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown mode 'turbo'" in err
