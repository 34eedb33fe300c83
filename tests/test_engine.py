"""`train.engine=vaebench`: the same numbers as pythae's trainer, and a step with no host read."""

from __future__ import annotations

import contextlib
import copy
import tempfile
import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmark.cli import main
from benchmark.config import identity
from benchmark.data.loading import ImageSplits
from benchmark.models import FAMILIES
from benchmark.running.suites import expand_cells, resolve_suite
from benchmark.train.device_adam import DeviceAdam
from benchmark.train.engine import Engine, epoch_order, gates_as_masks_on_cpu
from benchmark.train.pythae_compat import (
    one_hot_by_scatter,
    one_hot_without_host_reads,
    quiet_pythae,
)
from benchmark.train.training import UInt8Images, batch_loader, train
from conftest import TINY_SETTINGS

FAMILY_NAMES = ("betavae", "vqvae", "vaegan")
PARITY_STEPS = 200


def splits(train_size: int, val_size: int = 20) -> ImageSplits:
    """Digit-like images: random strokes on black, uint8, 1x28x28."""
    generator = torch.Generator().manual_seed(7)
    images = (torch.rand(train_size + val_size + 8, 1, 28, 28, generator=generator) > 0.8) * 255
    images = images.to(torch.uint8)
    return ImageSplits(
        train=images[:train_size],
        val=images[train_size : train_size + val_size],
        test=images[train_size + val_size :],
    )


def cell(model: str, *overrides: str, seed: int = 0):
    settings = [*TINY_SETTINGS, "train.device=cpu", "train.threads=1", *overrides]
    return expand_cells(resolve_suite("quick", settings, models=[model], seeds=[seed]))[0]


def steps_of(
    model_name: str, data: ImageSplits, *overrides: str, seed: int = 0
) -> tuple[list, list, dict]:
    """Every step's loss components, the epoch summaries and the final weights."""
    config = cell(model_name, *overrides, seed=seed)
    family = FAMILIES.get(model_name)
    params = family.params_model(**config.params)
    torch.manual_seed(config.seed)
    model = family.build(params, data.shape, config.arch)
    steps = []
    history = train(family, model, data, config, params, on_step=steps.append)
    return steps, history.epochs, model.state_dict()


GATED = ("vaegan.equilibrium=0.4", "vaegan.margin=0.15")  # both gates open and close


@pytest.mark.parametrize(
    "name, more, masks",
    [
        ("betavae", (), False),
        ("vqvae", (), False),
        ("vaegan", (), False),
        ("vaegan", GATED, False),  # the CPU's branches
        ("vaegan", GATED, True),  # the GPU's masks
    ],
)
def test_the_engine_computes_pythaes_losses_step_for_step(name, more, masks):
    """fp32 on the CPU, same seed and batches (a training set that is a multiple of the batch
    size, so pythae trains no partial batch): the first 200 steps' losses, every component,
    and the validation losses are pythae's trainer's, to 1e-6 relative (measured: bit for bit).
    VAEGAN's gates are checked both ways: as branches (the CPU) and as masks (a GPU)."""
    batch, train_size = 8, 64
    epochs = PARITY_STEPS // (train_size // batch)
    data = splits(train_size)
    settings = (f"train.batch_size={batch}", f"train.epochs={epochs}", *more)
    pythae_steps, pythae_epochs, pythae_weights = steps_of(name, data, *settings)
    with gates_as_masks_on_cpu() if masks else contextlib.nullcontext():
        ours, our_epochs, our_weights = steps_of(name, data, *settings, "train.engine=vaebench")
    assert len(pythae_steps) == len(ours) == PARITY_STEPS
    components = [k for k in pythae_steps[0] if k.startswith("train/")]
    assert "train/loss" in components
    for index, (theirs, mine) in enumerate(zip(pythae_steps, ours, strict=True)):
        for key in components:
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-9), (index, key)
    if more:  # the masked updates were exercised: each gate closed on some steps, not all
        for gate in ("train/update_decoder", "train/update_discriminator"):
            assert 0 < sum(step[gate] for step in pythae_steps) < PARITY_STEPS, gate
    for theirs, mine in zip(pythae_epochs, our_epochs, strict=True):
        for key in (k for k in theirs if k.startswith("val/")):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-9), key
    for key, value in pythae_weights.items():
        torch.testing.assert_close(our_weights[key], value, rtol=1e-5, atol=1e-6)


def test_the_engine_drops_the_last_partial_batch():
    data = splits(70)  # 8 full batches of 8, and 6 images left over
    steps, _, _ = steps_of("betavae", data, "train.batch_size=8", "train.engine=vaebench")
    assert len(steps) == 8  # one epoch (TINY_SETTINGS): 8 full batches, not 9


class Indices(torch.utils.data.Dataset):
    """A dataset whose batch is the list of indices the loader asked for."""

    def __len__(self) -> int:
        return 50

    def __getitem__(self, indices):
        return torch.tensor(indices)


def test_an_epochs_order_is_drawn_as_pythaes_loader_draws_it():
    torch.manual_seed(3)
    loader_order = torch.cat(list(batch_loader(Indices(), 8, True)))
    after_loader = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(epoch_order(50), loader_order)
    assert torch.equal(torch.rand(3), after_loader)  # the same random numbers used up


class HostReads(TorchDispatchMode):
    """Every op that copies a tensor's value to the host (`.item()`, `bool(t)`, `float(t)`,
    `if t:` all end in aten._local_scalar_dense): on a GPU, each is a wait for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads.append("".join(traceback.format_stack(limit=8)[:-1]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_a_training_step_reads_nothing_back_to_the_host(name):
    config = cell(name, "train.batch_size=8", "train.engine=vaebench")
    family = FAMILIES.get(name)
    params = family.params_model(**config.params)
    data = splits(32)
    model = family.build(params, data.shape, config.arch)
    with tempfile.TemporaryDirectory() as workdir, quiet_pythae():
        trainer = family.make_trainer(
            model,
            UInt8Images(data.train),
            None,
            params,
            config.train,
            config.seed,
            workdir,
            "cpu",
            [],
        )
        trainer.prepare_training()
        engine = Engine(trainer, family, model, data.train, None, config.train, "cpu")
        engine.gates_as_masks = True  # the GPU's step, run on the CPU
        model.train()
        x = engine.batch(data.train, torch.arange(8))
        engine.step({"data": x}, epoch=1)  # optimiser state made (lazily, as torch does)
        with HostReads() as watch, one_hot_without_host_reads(model):
            for _ in range(3):
                engine.step({"data": x}, epoch=1)
    assert watch.reads == [], watch.reads[0]


def test_the_dispatch_mode_sees_a_host_read():
    with HostReads() as watch:
        torch.ones(2).sum().item()
    assert len(watch.reads) == 1


@pytest.mark.parametrize("decoupled", [False, True])
def test_device_adam_is_torchs_adam_bit_for_bit_and_a_closed_gate_changes_nothing(decoupled):
    torch.manual_seed(0)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    theirs_net, ours_net = copy.deepcopy(net), copy.deepcopy(net)
    theirs = cls(theirs_net.parameters(), lr=3e-3, weight_decay=0.01)
    ours = DeviceAdam(cls(ours_net.parameters(), lr=3e-3, weight_decay=0.01))
    closed = torch.tensor(False)
    for step in range(50):
        x = torch.randn(5, 12)
        for model, optimizer in ((theirs_net, theirs), (ours_net, ours)):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
        theirs.step()
        ours.step(torch.tensor(True) if step % 2 else None)
        before = copy.deepcopy(ours.state_dict())
        weights = [p.clone() for p in ours_net.parameters()]
        ours.step(closed)  # the same gradients again, gate closed: nothing moves
        assert all(torch.equal(a, b) for a, b in zip(weights, ours_net.parameters(), strict=True))
        assert ours.state_dict()["state"][0]["step"] == before["state"][0]["step"]
    for a, b in zip(theirs_net.parameters(), ours_net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_one_hot_by_scatter_is_torchs_one_hot():
    indices = torch.randint(0, 7, (5, 1))
    assert torch.equal(one_hot_by_scatter(indices, 7), torch.nn.functional.one_hot(indices, 7))


@pytest.mark.slow
def test_a_killed_engine_cell_resumes_and_ends_with_the_uninterrupted_record(
    parquet_repo, tmp_path, capsys
):
    """VAEGAN (three Adam states with their step counts on the device, two gates) killed after
    epoch 2's rolling checkpoint, resumed: the record of a run never interrupted."""
    from test_resume import EPOCHS, assert_same_record, cell_of, run_and_kill, run_args

    engine = ["--set", "train.engine=vaebench"]
    straight = run_args(parquet_repo, tmp_path / "straight", "vaegan", every=0) + engine
    assert main(straight) == 0
    args = run_args(parquet_repo, tmp_path / "killed", "vaegan", every=1) + engine
    assert run_and_kill(args, "training", "SIGKILL") == -9
    capsys.readouterr()
    assert main(args) == 0
    assert f"resuming from the rolling checkpoint after epoch 2/{EPOCHS}" in capsys.readouterr().out
    assert_same_record(
        cell_of(tmp_path / "killed", "vaegan"), cell_of(tmp_path / "straight", "vaegan")
    )


def test_the_engine_is_part_of_a_cells_identity_and_pythae_is_what_earlier_records_did():
    pythae, ours = cell("betavae"), cell("betavae", "train.engine=vaebench")
    assert pythae.config_hash() != ours.config_hash()
    earlier = pythae.model_dump(mode="json")
    del earlier["train"]["engine"]  # a record written before the setting existed
    assert identity(earlier, "run") == pythae.config_hash()


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_a_compiled_step_gives_eagers_losses_and_compiles_once_per_process(name):
    """train.compile=default: the forward (so its backward) and the optimiser update compiled;
    random draws as in eager, so the losses differ by fp32 rounding only. The next cell of the
    same configuration (another seed) in the same process compiles nothing new; a different
    Python number in the step (a learning rate, a beta) does compile again."""
    from torch._dynamo.utils import counters

    data = splits(64)
    settings = ("train.batch_size=8", "train.epochs=3", "train.engine=vaebench")
    eager, eager_epochs, _ = steps_of(name, data, *settings)
    compiled, compiled_epochs, _ = steps_of(name, data, *settings, "train.compile=default")
    for theirs, mine in zip(eager, compiled, strict=True):
        for key in (k for k in theirs if k.startswith("train/")):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), key
    for theirs, mine in zip(eager_epochs, compiled_epochs, strict=True):
        assert mine["val/loss"] == pytest.approx(theirs["val/loss"], rel=1e-4)
    graphs = counters["stats"]["unique_graphs"]
    steps_of(name, data, *settings, "train.compile=default", seed=1)
    assert counters["stats"]["unique_graphs"] == graphs  # the next seed's cell reuses the code


def test_compile_needs_the_vaebench_engine_and_the_engine_adam(capsys):
    for settings, words in [
        (["train.compile=default"], "'train.compile'"),
        (["train.engine=vaebench", "train.optimizer=SGD"], "'train.engine'"),
    ]:
        sets = [a for s in settings for a in ("--set", s)]
        assert main(["run", "--dry-run", *sets]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err


def test_the_engine_stops_a_diverging_run():
    from benchmark.train.training import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="non-finite training loss"):
        steps_of(
            "betavae", splits(64), "train.engine=vaebench", "train.learning_rate=10",
            "train.epochs=5", "train.batch_size=8",
        )  # fmt: skip


@pytest.mark.slow
def test_a_suite_trains_with_the_engine_through_the_runner_and_jobs(parquet_repo, tmp_path):
    """Every family, two worker processes, records and per-step files as with pythae's loop."""
    import pandas as pd

    from benchmark.records.results import load_records

    sets = [a for s in [*TINY_SETTINGS, "train.engine=vaebench"] for a in ("--set", s)]
    args = ["run", "--datasets", str(parquet_repo), "--wandb", "off", "--jobs", "2", *sets]
    assert main([*args, "--out", str(tmp_path)]) == 0
    records = load_records(tmp_path / "results")
    assert sorted(r.model for r in records) == ["betavae", "vaegan", "vqvae"]
    for record in records:
        assert record.status == "ok" and record.config.train.engine == "vaebench"
        steps = pd.read_csv(next(tmp_path.rglob(f"*-{record.model}-seed0.steps.csv")))
        assert len(steps) == record.training["steps"] > 0 and steps["train/loss"].notna().all()
