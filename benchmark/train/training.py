"""Train a family's pythae model with pythae's own trainer, observing every step.

pythae's trainers report only epoch losses to callbacks. A forward hook on the model captures
each step's loss components (whatever the family's ModelOutput carries) without forking pythae;
the same hook stops a diverging run at the first non-finite loss.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pythae.data.datasets import DatasetOutput
from pythae.trainers.training_callbacks import TrainingCallback
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from benchmark.config import RunConfig
from benchmark.data.loading import ImageSplits
from benchmark.models import Family
from benchmark.train.engine import train_with_engine
from benchmark.train.pythae_compat import (
    autocast_forward,
    bce_outside_autocast,
    drop_pythae_console_callbacks,
    quiet_pythae,
    use_batch_loaders,
    without_best_model_copies,
)
from benchmark.train.resume import (
    RollingCheckpoint,
    TrainingState,
    capture,
    restore,
    restore_rng,
    trainer_parts,
)

# steps whose loss components wait on the GPU before one copy to the host (see StepRecorder)
HOST_COPY_EVERY_CUDA = 64


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


class UInt8Images(torch.utils.data.Dataset):
    """Serves pythae's DatasetOutput from a uint8 tensor, in [0, 1].

    Indexed with one int it gives one image (what pythae's own loaders ask for); indexed with a
    list of ints it gives the whole batch in one tensor operation (what `batch_loader` asks for).
    """

    def __init__(self, images: torch.Tensor, channels_last: bool = False) -> None:
        self.images = images
        self.channels_last = channels_last

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index) -> DatasetOutput:
        batch = self.images[index].float().div_(255)
        if self.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return DatasetOutput(data=batch)


def place_images(images: torch.Tensor, device: str) -> torch.Tensor:
    """On a GPU, hold the uint8 training images in device memory when they take under a quarter
    of what is free: a batch is then a gather on the device, with no host-to-device copy per
    step. (Full MNIST is 47 MB, CIFAR-10 150 MB, CelebA at 64x64 2.4 GB.)"""
    if torch.device(device).type != "cuda":
        return images
    free_bytes, _ = torch.cuda.mem_get_info()
    return images.to(device) if images.numel() * images.element_size() < free_bytes / 4 else images


def batch_loader(dataset: UInt8Images, batch_size: int, shuffle: bool) -> DataLoader:
    """A loader that fetches a whole batch per index operation.

    pythae's trainers build `DataLoader(dataset, batch_size, shuffle=True)`, which fetches and
    collates item by item. This one draws the same random numbers in the same order
    (DataLoader seed, then RandomSampler's seed and permutation), so batches and losses are
    identical for a seed, but a batch costs one indexing and one float conversion.
    """
    sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    return DataLoader(
        dataset,
        sampler=BatchSampler(sampler, batch_size=batch_size, drop_last=False),
        batch_size=None,  # the sampler yields index lists; the dataset returns whole batches
        collate_fn=_identity,
    )


def _identity(batch):
    return batch


@dataclass
class TrainingHistory:
    steps: list[dict[str, float]] = field(default_factory=list)  # train/<component> per step
    epochs: list[dict[str, float]] = field(default_factory=list)  # epoch means, train/ and val/
    seconds: float = 0.0
    peak_gpu_memory_mb: float | None = None  # CUDA runs only


class StepRecorder:
    """Forward hook: one record per training step, running means for validation batches.

    A training step's loss components stay on the device, stacked in one small tensor, until
    `host_every` steps are pending or the epoch ends; then one device-to-host copy takes them
    all. On a GPU that keeps the hook from synchronising every step (the host goes on queueing
    the backward while the forward runs); on the CPU (`host_every=1`) a copy costs nothing and
    a diverging run stops at once. A non-finite loss is reported with the step it appeared at.
    """

    def __init__(
        self,
        components: tuple[str, ...],
        on_step: Callable[[dict[str, float], int, float], None] | None = None,
        host_every: int = 1,
    ) -> None:
        self.components = components
        self.on_step = on_step
        self.host_every = host_every
        self.history = TrainingHistory()
        self._epoch_train: dict[str, list[float]] = defaultdict(list)
        self._epoch_val: dict[str, list[float]] = defaultdict(list)
        self.open_epoch()
        # (stacked tensor components or None, their names, other values, batch size, time)
        self._pending: list[tuple[torch.Tensor | None, list[str], dict, int, float]] = []

    def __call__(self, module, args, output) -> None:
        present = {n: v for n in self.components if (v := output.get(n)) is not None}
        tensors = [n for n, v in present.items() if torch.is_tensor(v)]
        plain = {n: float(v) for n, v in present.items() if n not in tensors}
        stacked = (
            torch.stack([present[n].detach().float().reshape(()) for n in tensors])
            if tensors
            else None
        )
        inputs = args[0] if args else None
        batch = len(inputs["data"]) if inputs is not None else 0
        entry = (stacked, tensors, plain, batch, time.perf_counter())
        if not module.training:  # validation: pythae's eval loop syncs each batch anyway
            self._record(False, *self._to_host([entry])[0])
            return
        self._pending.append(entry)
        if len(self._pending) >= self.host_every:
            self.flush()

    def flush(self) -> None:
        """Copy the pending training steps to the host (one copy) and record them in order."""
        pending, self._pending = self._pending, []
        for values, batch, at in self._to_host(pending):
            self._record(True, values, batch, at)

    def _to_host(self, entries) -> list[tuple[dict[str, float], int, float]]:
        stacks = [stacked for stacked, *_ in entries if stacked is not None]
        flat = iter(torch.cat(stacks).tolist() if stacks else [])
        host = []
        for stacked, names, plain, batch, at in entries:
            merged = {name: next(flat) for name in names} if stacked is not None else {}
            merged.update(plain)
            host.append(({n: merged[n] for n in self.components if n in merged}, batch, at))
        return host

    def _record(self, training: bool, values: dict[str, float], batch: int, at: float) -> None:
        loss = values.get("loss", math.nan)
        if not math.isfinite(loss):
            stage = "training" if training else "validation"
            raise TrainingDiverged(
                f"non-finite {stage} loss ({loss}) at step {len(self.history.steps) + 1}"
            )
        target = self._epoch_train if training else self._epoch_val
        for name, value in values.items():
            target[name].append(value)
        if training:
            step = {f"train/{k}": v for k, v in values.items()}
            self.history.steps.append(step)
            if self.on_step is not None:
                self.on_step(step, batch, at)

    def epoch_means(self, training: bool) -> dict[str, float]:
        """The epoch so far: each component's mean over its training (or validation) steps."""
        self.flush()
        values = self._epoch_train if training else self._epoch_val
        return {name: sum(series) / len(series) for name, series in values.items() if series}

    def open_epoch(self) -> None:
        """The epoch's clock starts now (`close_epoch` reads it and restarts it)."""
        self._opened = time.perf_counter()

    def close_epoch(self) -> dict[str, float]:
        self.flush()
        now = time.perf_counter()
        epoch = len(self.history.epochs) + 1  # counted here: a resumed trainer restarts at 1
        summary: dict[str, float] = {"epoch": float(epoch), "epoch_seconds": now - self._opened}
        self._opened = now
        for prefix, values in (("train", self._epoch_train), ("val", self._epoch_val)):
            for name, series in values.items():
                summary[f"{prefix}/{name}"] = sum(series) / len(series)
        self._epoch_train.clear()
        self._epoch_val.clear()
        self.history.epochs.append(summary)
        return summary


class _EpochCallback(TrainingCallback):
    """pythae calls on_log once per epoch: close the epoch, report it, and take the rolling
    checkpoint when one is due (after the scheduler step: the state the next epoch starts from).

    pythae adds its own tqdm bars and console printer to every trainer; the benchmark prints
    its own progress, so they are taken out once the trainer has set its callbacks up. A
    resumed cell's state goes into the trainer there too: pythae's `prepare_training` has just
    made fresh optimisers and reseeded every RNG, and the first epoch has not begun.
    """

    def __init__(
        self,
        recorder: StepRecorder,
        on_epoch: Callable[[dict], None] | None,
        model: torch.nn.Module,
        resume: TrainingState | None,
        rolling: RollingCheckpoint | None,
        seconds: Callable[[], float],
    ) -> None:
        self.recorder = recorder
        self.on_epoch = on_epoch
        self.model = model
        self.resume = resume
        self.rolling = rolling
        self.seconds = seconds
        self.trainer = None

    def on_train_begin(self, training_config, **kwargs) -> None:
        drop_pythae_console_callbacks(self.trainer)
        if self.resume is not None:
            restore(self.trainer, self.model, self.resume)

    def on_log(self, training_config, logs, **kwargs) -> None:
        summary = self.recorder.close_epoch()
        if self.on_epoch is not None:
            self.on_epoch(summary)
        done = len(self.recorder.history.epochs)
        if self.rolling is not None and self.rolling.due(done):
            history = self.recorder.history
            self.rolling.save(capture(self.trainer, self.model, done, history, self.seconds()))


@contextlib.contextmanager
def cell_threads(threads: int):
    """Compute with exactly `threads` CPU threads (torch's intra-op pool, and the BLAS/OpenMP
    pools numpy and scikit-learn use) for the block, whichever process runs it: the sequential
    runner, a `--jobs` worker, a SLURM job, `vaebench evaluate`."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return requested


def _learning_rates(trainer) -> dict[str, float]:
    """`lr/optimizer`, or `lr/encoder_optimizer`... for VAEGAN's coupled optimizers."""
    optimizers, _ = trainer_parts(trainer)
    return {f"lr/{name}": float(o.param_groups[0]["lr"]) for name, o in optimizers.items()}


def train(
    family: Family,
    model,
    data: ImageSplits,
    config: RunConfig,
    params,
    on_epoch: Callable[[dict], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
    fast_loading: bool = True,
    resume: TrainingState | None = None,
    rolling: RollingCheckpoint | None = None,
) -> TrainingHistory:
    """Train `model` in place (the final weights are what the benchmark evaluates).

    `on_step` receives the step's loss components plus trainer/step, trainer/epoch, the
    learning rate(s) and perf/images_per_s; `on_epoch` the epoch means (train/ and val/).
    `resume`: continue from a rolling checkpoint's state (its epochs are not run again);
    `rolling`: where to keep one (see benchmark/train/resume.py).
    """
    device = resolve_device(config.train.device)
    earlier = resume.train_seconds if resume is not None else 0.0
    if resume is not None and resume.epochs_done >= config.train.epochs:
        return _trained_already(model, resume, device, config.train.channels_last)
    clock = {"last": time.perf_counter()}

    def report_step(step: dict[str, float], batch: int, at: float) -> None:
        elapsed, clock["last"] = at - clock["last"], at
        values = {
            **step,
            "trainer/step": len(recorder.history.steps),
            "trainer/epoch": len(recorder.history.epochs) + 1,
            "perf/images_per_s": batch / elapsed if elapsed > 0 else 0.0,
        }
        if callback.trainer is not None:
            values.update(_learning_rates(callback.trainer))
        on_step(values)

    recorder = StepRecorder(
        family.train_components,
        report_step if on_step else None,
        host_every=HOST_COPY_EVERY_CUDA if device == "cuda" else 1,
    )
    if resume is not None:
        recorder.history.steps = list(resume.steps)
        recorder.history.epochs = list(resume.epochs)
    started = time.perf_counter()
    callback = _EpochCallback(
        recorder, on_epoch, model, resume, rolling, lambda: earlier + time.perf_counter() - started
    )
    with tempfile.TemporaryDirectory(prefix="vaebench-pythae-") as workdir, quiet_pythae():
        if config.train.channels_last:
            model.to(memory_format=torch.channels_last)
        nhwc = config.train.channels_last
        trainer = family.make_trainer(
            model,
            UInt8Images(place_images(data.train, device), nhwc),
            UInt8Images(place_images(data.val, device), nhwc) if len(data.val) else None,
            params,
            config.train,
            config.seed,
            workdir,
            device,
            [callback],
        )
        callback.trainer = trainer
        if resume is not None:  # pythae always counts epochs from 1: run only what is left
            trainer.training_config.num_epochs = config.train.epochs - resume.epochs_done
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        recorder.open_epoch()  # the first epoch's clock starts with its first step
        try:
            if config.train.engine == "vaebench":
                bf16 = config.train.precision == "bf16"
                with bce_outside_autocast(model) if bf16 else contextlib.nullcontext():
                    train_with_engine(
                        trainer,
                        family,
                        model,
                        trainer.train_dataset.images,
                        trainer.eval_dataset.images if trainer.eval_dataset else None,
                        config.train,
                        device,
                        recorder,
                        callback,
                    )
            else:
                _train_with_pythae(trainer, model, config, device, recorder, fast_loading)
        except BaseException:
            with contextlib.suppress(Exception):  # steps still on the device: history, W&B
                recorder.flush()
            raise
    recorder.history.seconds = earlier + time.perf_counter() - started
    if device == "cuda":
        recorder.history.peak_gpu_memory_mb = torch.cuda.max_memory_allocated() / 2**20
    return recorder.history


def _train_with_pythae(trainer, model, config: RunConfig, device, recorder, fast_loading) -> None:
    """pythae's own `trainer.train()`, each step observed by a forward hook."""
    if fast_loading:  # batch loaders for pythae's item-by-item ones (same order, same losses)
        use_batch_loaders(trainer, config.train.batch_size, batch_loader)
    # registered after the trainer's sanity-check forward, so only real steps are recorded
    handle = model.register_forward_hook(recorder)
    try:
        with (
            without_best_model_copies(trainer),
            autocast_forward(model, device, config.train.precision),
        ):
            trainer.train()
    finally:
        handle.remove()


def _trained_already(model, state: TrainingState, device: str, channels_last: bool):
    """The rolling checkpoint was taken after the last epoch (the cell died in evaluation):
    its weights are the trained model."""
    model.load_state_dict(state.model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    restore_rng(state.rng)
    return TrainingHistory(list(state.steps), list(state.epochs), state.train_seconds)
