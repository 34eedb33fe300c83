"""Training through pythae's trainers, observed step by step."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from pythae.models.base.base_utils import ModelOutput
from pythae.trainers.training_callbacks import TrainingCallback

from benchmark.config import DataConfig
from benchmark.data.loading import load_image_splits
from benchmark.models import FAMILIES
from benchmark.running.suites import expand_cells, resolve_suite
from benchmark.train.pythae_compat import (
    autocast_forward,
    bce_outside_autocast,
    quiet_pythae,
    step_schedulers,
    use_batch_loaders,
)
from benchmark.train.training import (
    StepRecorder,
    TrainingDiverged,
    UInt8Images,
    batch_loader,
    train,
)
from conftest import TINY_SETTINGS


@pytest.fixture(scope="module")
def tiny_data(parquet_repo):
    return load_image_splits(str(parquet_repo), DataConfig(max_train=96, val_fraction=0.2))


def cell(model: str, *overrides: str):
    suite = resolve_suite("quick", [*TINY_SETTINGS, "train.epochs=2", *overrides], models=[model])
    return expand_cells(suite)[0]


def fit(model_name, tiny_data, *overrides, on_epoch=None):
    config = cell(model_name, *overrides)
    family = FAMILIES.get(model_name)
    params = family.params_model(**config.params)
    torch.manual_seed(config.seed)
    model = family.build(params, tiny_data.shape, config.arch)
    return model, train(family, model, tiny_data, config, params, on_epoch)


@pytest.mark.parametrize("name", FAMILIES.names())
def test_every_step_is_recorded_with_the_familys_components(name, tiny_data):
    epochs = []
    _, history = fit(name, tiny_data, on_epoch=epochs.append)
    steps_per_epoch = -(-len(tiny_data.train) // 32)
    assert len(history.steps) == 2 * steps_per_epoch
    expected = {f"train/{c}" for c in FAMILIES.get(name).train_components}
    assert set(history.steps[0]) == expected
    assert [e["epoch"] for e in epochs] == [1.0, 2.0] and history.epochs == epochs
    assert {"val/loss", "train/loss"} <= set(epochs[-1])
    if name == "vaegan":  # the update gates, as 0/1 per step
        assert {s["train/update_decoder"] for s in history.steps} <= {0.0, 1.0}


def test_pythae_reports_only_epoch_losses_to_callbacks(tiny_data, tmp_path):
    """Quirk: the trainer's callbacks never see per-step losses; the forward hook does."""
    seen_step_kwargs, seen_logs = [], []

    class Spy(TrainingCallback):
        def on_train_step_end(self, training_config, **kwargs):
            seen_step_kwargs.append(kwargs)

        def on_log(self, training_config, logs, **kwargs):
            seen_logs.append(dict(logs))

    config = cell("betavae")
    family = FAMILIES.get("betavae")
    params = family.params_model(**config.params)
    model = family.build(params, tiny_data.shape, "compact")
    trainer = family.make_trainer(
        model,
        UInt8Images(tiny_data.train),
        None,
        params,
        config.train,
        0,
        str(tmp_path),
        "cpu",
        [Spy()],
    )
    with quiet_pythae():
        trainer.train()
    assert seen_step_kwargs and all(
        "loss" not in k and "recon_loss" not in k for k in seen_step_kwargs
    )
    assert set(seen_logs[0]) == {"train_epoch_loss"}  # no recon_loss / reg_loss components


def test_same_seed_same_losses(tiny_data):
    _, first = fit("vaegan", tiny_data)
    _, second = fit("vaegan", tiny_data)
    assert first.steps[:5] == second.steps[:5]


def test_a_non_finite_loss_stops_training():
    recorder = StepRecorder(("loss", "recon_loss"))
    module = torch.nn.Linear(1, 1)
    recorder(module, (), ModelOutput(loss=torch.tensor(3.0), recon_loss=torch.tensor(1.0)))
    with pytest.raises(TrainingDiverged, match="non-finite training loss \\(nan\\) at step 2"):
        recorder(
            module, (), ModelOutput(loss=torch.tensor(float("nan")), recon_loss=torch.tensor(1.0))
        )


def test_real_divergence_is_caught(tiny_data):
    with pytest.raises(TrainingDiverged):
        fit("betavae", tiny_data, "train.optimizer=SGD", "train.learning_rate=10")


def test_bf16_autocast_covers_the_forward_only_while_training():
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with autocast_forward(layer, "cpu", "bf16"):
        assert layer(x).dtype == torch.bfloat16
        assert layer.weight.dtype == torch.float32  # the optimiser keeps fp32 weights
    assert "forward" not in layer.__dict__ and layer(x).dtype == torch.float32  # evaluation
    with autocast_forward(layer, "cpu", "fp32"):
        assert layer(x).dtype == torch.float32


@pytest.mark.parametrize("name", ["betavae", "vaegan"])  # BaseTrainer and the coupled trainer
def test_pythae_copies_and_saves_the_best_model_but_not_for_us(
    name, tiny_data, monkeypatch, tmp_path
):
    """Quirk: pythae's train() deep-copies the model each epoch the validation loss improves and
    saves the copy at the end; the benchmark evaluates the final weights, so it skips both."""
    from pythae.trainers import BaseTrainer

    family = FAMILIES.get(name)
    trainer_module = sys.modules[family.trainer_cls.train.__module__]
    real_deepcopy = trainer_module.deepcopy
    copied, saved = [], []

    def spy_deepcopy(obj, *args):
        copied.append(obj)
        return real_deepcopy(obj, *args)

    monkeypatch.setattr(trainer_module, "deepcopy", spy_deepcopy)
    monkeypatch.setattr(BaseTrainer, "save_model", lambda self, model, dir_path: saved.append(1))

    config = cell(name)
    params = family.params_model(**config.params)
    model = family.build(params, tiny_data.shape, config.arch)
    data = (UInt8Images(tiny_data.train), UInt8Images(tiny_data.val))
    trainer = family.make_trainer(
        model, *data, params, config.train, config.seed, str(tmp_path), "cpu"
    )
    with quiet_pythae():
        trainer.train()
    assert any(obj is model for obj in copied) and saved  # what pythae does on its own

    copied.clear(), saved.clear()
    ours, _ = fit(name, tiny_data)
    assert not any(obj is ours for obj in copied) and not saved
    assert trainer_module.deepcopy is spy_deepcopy  # put back as it was


UNSAFE = "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast."


@pytest.fixture
def bce_refused_under_autocast(monkeypatch):
    """CUDA autocast refuses binary_cross_entropy, CPU autocast accepts it: this stand-in for
    torch's BCE refuses as CUDA does, and records the autocast state and dtypes it was given."""
    real = torch.nn.functional.binary_cross_entropy
    calls = []

    def refusing(input, target, *args, **kwargs):
        autocast = torch.is_autocast_enabled("cpu")
        calls.append((autocast, input.dtype, target.dtype))
        if autocast:
            raise RuntimeError(UNSAFE)
        return real(input, target, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy", refusing)
    return calls


BCE_CASES = [("vaegan", []), ("betavae", ["betavae.reconstruction_loss=bce"])]


@pytest.mark.parametrize(("name", "overrides"), BCE_CASES)
def test_pythae_calls_bce_inside_its_forward(
    name, overrides, tiny_data, bce_refused_under_autocast
):
    """Quirk: the BCE of VAEGAN's discriminator loss (and BetaVAE's bce reconstruction loss) is
    computed inside pythae's forward, so an autocast forward on CUDA fails on it."""
    config = cell(name, *overrides)
    family = FAMILIES.get(name)
    model = family.build(family.params_model(**config.params), tiny_data.shape, "compact")
    batch = {"data": tiny_data.train[:8].float() / 255}
    with pytest.raises(RuntimeError, match="unsafe to autocast"), torch.autocast("cpu"):
        model(batch)
    with bce_outside_autocast(model), torch.autocast("cpu", dtype=torch.bfloat16):
        model(batch)
    assert bce_refused_under_autocast[-1] == (False, torch.float32, torch.float32)
    module = sys.modules[type(model).loss_function.__module__]
    assert module.F is torch.nn.functional  # put back after the block


@pytest.mark.parametrize(("name", "overrides"), BCE_CASES)
def test_bf16_training_runs_bce_in_fp32_outside_autocast(
    name, overrides, tiny_data, bce_refused_under_autocast
):
    _, history = fit(name, tiny_data, "train.precision=bf16", *overrides)
    steps = len(history.steps)
    per_step = 2 if name == "vaegan" else 1
    assert len(bce_refused_under_autocast) >= steps * per_step
    assert set(bce_refused_under_autocast) == {(False, torch.float32, torch.float32)}
    assert all(math.isfinite(s["train/loss"]) for s in history.steps)


def test_deferred_host_copies_record_the_same_steps(tiny_data, monkeypatch):
    """On CUDA the step hook copies loss components to the host every 64 steps, not every step;
    the same path on the CPU must record exactly what the per-step copy records, and stop a
    diverging run with the step where the loss first went non-finite."""
    import benchmark.train.training as training

    _, every_step = fit("vaegan", tiny_data)
    monkeypatch.setattr(training, "resolve_device", lambda requested: "cpu")
    copies = []
    real_init = StepRecorder.__init__

    def deferred_init(self, components, on_step=None, host_every=1):
        real_init(self, components, on_step, host_every=3)
        copies.append(self)

    monkeypatch.setattr(StepRecorder, "__init__", deferred_init)
    _, deferred = fit("vaegan", tiny_data)
    assert copies and deferred.steps == every_step.steps
    assert deferred.epochs[-1]["train/loss"] == every_step.epochs[-1]["train/loss"]

    monkeypatch.undo()
    recorder = StepRecorder(("loss",), host_every=4)
    module = torch.nn.Linear(1, 1)
    for loss in (1.0, 2.0, float("inf")):
        recorder(module, (), ModelOutput(loss=torch.tensor(loss)))
    assert recorder.history.steps == []  # still on the device
    with pytest.raises(TrainingDiverged, match=r"non-finite training loss \(inf\) at step 3"):
        recorder.flush()


def pythae_trainer(name, tiny_data, tmp_path):
    family = FAMILIES.get(name)
    config = cell(name)
    params = family.params_model(**config.params)
    model = family.build(params, tiny_data.shape, config.arch)
    data = (UInt8Images(tiny_data.train), UInt8Images(tiny_data.val))
    return family.make_trainer(
        model, *data, params, config.train, config.seed, str(tmp_path), "cpu"
    )


def batches(loader, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [batch["data"] for batch in loader]


def test_batch_loaders_replace_pythaes_item_by_item_ones_with_the_same_batches(tiny_data, tmp_path):
    """Quirk: pythae's trainer builds DataLoaders that fetch and collate one image at a time.
    `use_batch_loaders` swaps in loaders that index a batch at once: the same batches, in the
    same order, for a seed (training and validation)."""
    trainer = pythae_trainer("betavae", tiny_data, tmp_path)
    theirs = trainer.train_loader, trainer.eval_loader
    assert theirs[0].batch_size == 32 and theirs[0].batch_sampler is not None  # item by item
    pythae_train, pythae_eval = batches(theirs[0], 5), batches(theirs[1], 6)

    use_batch_loaders(trainer, 32, batch_loader)
    assert trainer.train_loader is not theirs[0] and trainer.eval_loader is not theirs[1]
    ours_train, ours_eval = batches(trainer.train_loader, 5), batches(trainer.eval_loader, 6)
    assert len(ours_train) == len(pythae_train) == 3 and len(ours_eval) == len(pythae_eval)
    for mine, their in zip(ours_train + ours_eval, pythae_train + pythae_eval, strict=True):
        assert torch.equal(mine, their)


@pytest.mark.parametrize("name", ["betavae", "vaegan"])  # BaseTrainer and the coupled trainer
def test_schedulers_step_with_each_optimisers_own_epoch_loss(name, tiny_data, tmp_path):
    """pythae's `_schedulers_step` takes one loss, or VAEGAN's three by keyword: with
    plateau schedulers (patience 0), a learning rate halves exactly where its loss rose."""
    trainer = pythae_trainer(name, tiny_data, tmp_path)
    trainer.prepare_training()  # optimisers and schedulers, as before pythae's loop
    optimisers = {
        key.removesuffix("optimizer"): value
        for key, value in vars(trainer).items()
        if isinstance(value, torch.optim.Optimizer)
    }
    for prefix, optimiser in optimisers.items():
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, patience=0, factor=0.5)
        setattr(trainer, f"{prefix}scheduler", plateau)
    coupled = name == "vaegan"
    losses = ("encoder_loss", "decoder_loss", "discriminator_loss") if coupled else ("loss",)
    assert len(optimisers) == len(losses)
    rising = {"encoder_loss", "discriminator_loss", "loss"}
    start = {prefix: o.param_groups[0]["lr"] for prefix, o in optimisers.items()}
    step_schedulers(trainer, dict.fromkeys(losses, 1.0), coupled)
    step_schedulers(trainer, {k: 2.0 if k in rising else 0.5 for k in losses}, coupled)
    for loss in losses:
        prefix = loss.removesuffix("loss")
        lr = optimisers[prefix].param_groups[0]["lr"]
        assert lr == pytest.approx(start[prefix] * (0.5 if loss in rising else 1.0)), loss
