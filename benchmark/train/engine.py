"""`train.engine: vaebench`: pythae's models, losses, optimisers and schedulers, our own loop.

pythae's trainer prepares everything as it would (seed, optimisers, schedulers, with the configs
the family gives it); this loop then trains with it, and differs from pythae's loop in what a
GPU waits on, not in what it computes:

- the training images stay on the device; an epoch's order is drawn as pythae's DataLoader
  draws it (same random numbers, same order), and a batch is a gather on the device;
- no host read inside a step: the loss components stay on the device until the recorder takes
  them every N steps; Adam's step count lives on the device (`device_adam.py`); VAEGAN's
  margin/equilibrium gates are device-side masks (`models/vaegan.gated_forward`), and an
  optimiser whose gate is closed keeps its state, as when pythae's coupled trainer skips it.
  (On the CPU, where a host read is no wait, the gates branch as in pythae instead, which
  skips a closed optimiser's backward; the tests check the masks there too);
- static shapes: every training batch has `train.batch_size` images; the last, smaller batch
  of an epoch is dropped (pythae trains on it). With a training set a multiple of the batch
  size both loops compute the same numbers (`tests/test_engine.py`).

Validation, the scheduler step, the rolling checkpoint and what is reported each epoch are
pythae's trainer's, through the same callback the pythae engine uses.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable

import torch
from pythae.trainers import BaseTrainer, CoupledOptimizerAdversarialTrainer

from benchmark.errors import UserInputError
from benchmark.train.device_adam import DeviceAdam, compiled_separately
from benchmark.train.pythae_compat import (
    one_hot_without_host_reads,
    step_schedulers,
    traceable_model_outputs,
)
from benchmark.train.resume import trainer_parts

COUPLED = ("encoder_optimizer", "decoder_optimizer", "discriminator_optimizer")
GATES = ("update_encoder", "update_decoder", "update_discriminator")
COUPLED_LOSSES = ("encoder_loss", "decoder_loss", "discriminator_loss")
# VAEGAN's gates as device-side masks on the CPU too, inside `gates_as_masks_on_cpu()` only
_MASKS_ON_CPU: contextvars.ContextVar[bool] = contextvars.ContextVar("masks_on_cpu", default=False)
# compiled forwards, one per family and mode, kept for the process: a later epoch or cell of the
# same family and shapes runs the code compiled for the first (parameters are graph inputs)
_COMPILED: dict[tuple[str, str], Callable] = {}


def compile_options(mode: str) -> dict:
    """torch.compile's options for `mode`, with random draws made as eager makes them (the
    same numbers for a seed, compiled or not)."""
    import torch._inductor

    # on a machine without CUDA, compiling warns that it found no CUDA runtime: not news here
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return {**torch._inductor.list_mode_options(mode), "fallback_random": True}


def compiled_forward(family, mode: str) -> Callable:
    """The family's training forward as a compiled function of (model, inputs) -> its loss
    components. No `epoch` or `dataset_size` goes in (a changing Python number would compile
    again each epoch; no family reads them: tests/test_resume.py pins it)."""
    key = (family.name, mode)
    if key not in _COMPILED:
        forward = family.engine_forward or _model_forward
        names = family.train_components

        def components(model, inputs):
            outputs = forward(model, inputs)
            return {name: outputs[name] for name in names if outputs.get(name) is not None}

        _COMPILED[key] = compiled_separately(components, compile_options(mode))
    return _COMPILED[key]


def epoch_order(n: int) -> torch.Tensor:
    """A permutation of range(n), drawn from the global RNG exactly as iterating pythae's
    DataLoader(shuffle=True) draws it: the loader's base seed, then RandomSampler's seed."""
    torch.empty((), dtype=torch.int64).random_()  # the DataLoader iterator's base seed
    seed = int(torch.empty((), dtype=torch.int64).random_().item())
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator)


def check_engine_fits(trainer, train_size: int, batch_size: int) -> None:
    """What the config cannot know: the family's trainer and the training set's size. (That
    the optimiser is Adam or AdamW is checked when the config is read: config.TrainConfig.)"""
    if type(trainer) not in (BaseTrainer, CoupledOptimizerAdversarialTrainer):
        raise UserInputError(
            f"train.engine=vaebench trains with pythae's BaseTrainer or "
            f"CoupledOptimizerAdversarialTrainer, not {type(trainer).__name__}"
        )
    if train_size < batch_size:
        raise UserInputError(
            f"train.engine=vaebench drops an epoch's last partial batch, and the training set "
            f"({train_size} images) is smaller than train.batch_size={batch_size}"
        )


class Engine:
    """One cell's training loop over a prepared pythae trainer."""

    def __init__(self, trainer, family, model, images, val_images, train_config, device) -> None:
        self.trainer = trainer
        self.model = model
        self.images = images  # uint8, on the training device when it fits there
        self.val_images = val_images
        self.batch_size = train_config.batch_size
        self.channels_last = train_config.channels_last
        self.precision = train_config.precision
        self.device = torch.device(device)
        self.forward = family.engine_forward or _model_forward
        self.optimizers = {
            name: DeviceAdam(optimizer) for name, optimizer in trainer_parts(trainer)[0].items()
        }
        self.coupled = set(self.optimizers) == set(COUPLED)
        # a host read costs nothing on the CPU: there the gates branch as in pythae, and a closed
        # optimiser's backward is skipped; elsewhere they are masks, every backward runs
        self.gates_as_masks = self.device.type != "cpu" or _MASKS_ON_CPU.get()
        self.compiled = None
        if train_config.compile != "off":
            self.compiled = compiled_forward(family, train_config.compile)
            for optimizer in self.optimizers.values():
                optimizer.compile(compile_options(train_config.compile))

    def batch(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        x = images[indices.to(images.device)].to(self.device, non_blocking=True)
        x = x.float().div_(255)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train_epoch(self, epoch: int, record) -> None:
        """One epoch of full batches; `record(model, inputs, outputs)` after each step."""
        self.model.train()
        order = epoch_order(len(self.images)).to(self.images.device)
        steps = len(self.images) // self.batch_size
        traced = traceable_model_outputs() if self.compiled else contextlib.nullcontext()
        with one_hot_without_host_reads(self.model), traced, self.compile_settings():
            for index in range(steps):
                x = self.batch(self.images, order[index * self.batch_size :][: self.batch_size])
                inputs = {"data": x}
                outputs = self.step(inputs, epoch)
                record(self.model, (inputs,), outputs)
        self.model.update()

    def step(self, inputs: dict, epoch: int) -> dict[str, torch.Tensor]:
        """Forward, backward and optimiser steps for one batch, with no host read."""
        kwargs = {"epoch": epoch, "dataset_size": len(self.images), "uses_ddp": False}
        with self.autocast():
            if self.compiled is not None:
                outputs = self.compiled(self.model, inputs)
            else:
                outputs = self.forward(self.model, inputs, **kwargs)
        if self.coupled and self.gates_as_masks:
            self._coupled_update(outputs)
        elif self.coupled:
            self._coupled_update_on_the_cpu(outputs)
        else:
            optimizer = self.optimizers["optimizer"]
            optimizer.zero_grad()
            outputs["loss"].backward()
            optimizer.step()
        return outputs

    def _coupled_update(self, outputs: dict) -> None:
        """pythae's CoupledOptimizerAdversarialTrainer._optimizers_step with its gates as masks.

        pythae, per optimiser whose gate is open: zero its gradients, backpropagate its loss
        (into every parameter the loss reaches); then step each open optimiser. Here every
        backward runs, scaled by its gate (0 or 1: exact), each optimiser's gradients are zeroed
        where its gate is open, and a closed optimiser keeps its state."""
        encoder, decoder, discriminator = (self.optimizers[name] for name in COUPLED)
        open_decoder = outputs["update_decoder"]
        open_discriminator = outputs["update_discriminator"]
        encoder.zero_grad()  # pythae's encoder gate is always open
        outputs["encoder_loss"].backward(retain_graph=True)
        _zero_where(decoder, open_decoder)
        (outputs["decoder_loss"] * open_decoder).backward(retain_graph=True)
        _zero_where(discriminator, open_discriminator)
        (outputs["discriminator_loss"] * open_discriminator).backward()
        encoder.step()
        decoder.step(open_decoder)
        discriminator.step(open_discriminator)

    def _coupled_update_on_the_cpu(self, outputs: dict) -> None:
        """pythae's CoupledOptimizerAdversarialTrainer._optimizers_step itself, branches and
        all: on the CPU reading a gate is no wait, and a closed optimiser's backward is work
        saved."""
        gates = [bool(outputs[gate]) for gate in GATES]
        optimizers = [self.optimizers[name] for name in COUPLED]
        for gate, optimizer, loss, retain in zip(
            gates, optimizers, COUPLED_LOSSES, (True, True, False), strict=True
        ):
            if gate:
                optimizer.zero_grad()
                outputs[loss].backward(retain_graph=retain)
        for gate, optimizer in zip(gates, optimizers, strict=True):
            if gate:
                optimizer.step()

    def validate(self, epoch: int, record) -> None:
        """pythae's eval_step: the validation set in a shuffled order, every batch (the last
        may be smaller), the model's own forward without gradients."""
        self.model.eval()
        order = epoch_order(len(self.val_images))
        size = self.trainer.training_config.per_device_eval_batch_size
        kwargs = {"epoch": epoch, "dataset_size": len(self.val_images), "uses_ddp": False}
        with torch.no_grad():
            for start in range(0, len(self.val_images), size):
                inputs = {"data": self.batch(self.val_images, order[start : start + size])}
                with self.autocast():
                    record(self.model, (inputs,), _model_forward(self.model, inputs, **kwargs))

    def autocast(self):
        """bf16 around a forward pass (never around a backward or the optimiser)."""
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16")

    def compile_settings(self):
        """torch's compiler settings this engine's compiled step needs, for the block only
        (AOTAutograd reads them when it compiles, at a step's first call): VAEGAN's three
        backward passes share one graph (retain_graph=True), which donated buffers
        (activations freed by the first backward) forbid."""
        if self.compiled is None or not self.coupled:
            return contextlib.nullcontext()
        return torch._functorch.config.patch(donated_buffer=False)

    def scheduler_step(self, means: dict[str, float]) -> None:
        """pythae's scheduler step, fed the epoch's mean losses as its trainer feeds it."""
        step_schedulers(self.trainer, means, self.coupled)


def _model_forward(model, inputs, **kwargs):
    """The model class's own forward: no forward hooks, no per-instance patches (the engine
    records each step itself and applies autocast itself)."""
    return type(model).forward(model, inputs, **kwargs)


@contextlib.contextmanager
def gates_as_masks_on_cpu():
    """For the block, engines made on the CPU run VAEGAN's gates as device-side masks, as on a
    GPU (the GPU's path, checked on the CPU by the parity tests)."""
    token = _MASKS_ON_CPU.set(True)
    try:
        yield
    finally:
        _MASKS_ON_CPU.reset(token)


def train_with_engine(
    trainer, family, model, images, val_images, train_config, device, recorder, callback
) -> None:
    """pythae's `trainer.train()`, with this module's loop: the trainer prepares (seed,
    optimisers, schedulers, callbacks), `callback` does what it does under pythae each epoch
    (report, rolling checkpoint) and, on resume, puts the saved state in."""
    check_engine_fits(trainer, len(images), train_config.batch_size)
    trainer.prepare_training()
    callback.on_train_begin(trainer.training_config)
    engine = Engine(trainer, family, model, images, val_images, train_config, device)
    validating = val_images is not None and len(val_images) > 0
    for epoch in range(1, trainer.training_config.num_epochs + 1):
        engine.train_epoch(epoch, recorder)
        if validating:
            engine.validate(epoch, recorder)
        engine.scheduler_step(recorder.epoch_means(training=not validating))
        callback.on_log(trainer.training_config, {})


def _zero_where(optimizer: DeviceAdam, gate: torch.Tensor) -> None:
    """`optimizer.zero_grad()` where the 0-dim bool `gate` is true; the gradients as they are
    otherwise (pythae leaves a skipped optimiser's gradients alone)."""
    grads = [
        p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
    ]
    if grads:
        torch._foreach_mul_(grads, (~gate).to(grads[0].dtype))
