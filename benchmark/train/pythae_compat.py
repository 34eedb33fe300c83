"""Everything that adjusts pythae 0.1.2 at run time, in one place, each scoped to a block.

Each patch answers one of pythae's quirks, and each has a test in tests/test_training.py that
pins the quirk (what stock pythae does) and the fix (what it does under the patch):

- `autocast_forward`: bf16 autocast around each forward pass, never around the whole loop.
- `bce_outside_autocast`: pythae's losses call `F.binary_cross_entropy`, which CUDA autocast
  refuses ("unsafe to autocast"); under the patch it runs in fp32, outside autocast.
- `without_best_model_copies`: no best-model deep copy per epoch, no final save.
- `quiet_pythae` / `drop_pythae_console_callbacks`: pythae's own logging, tqdm bars and
  console printer, which the benchmark replaces with its own progress.
- `traceable_model_outputs`: `torch.compile` cannot trace pythae's `ModelOutput` (an
  OrderedDict whose attributes are set by overridden `__setitem__`; compiled, `out.embedding`
  fails with "'ModelOutput' object has no attribute 'embedding'"). While compiled steps run,
  the modules that build one build a plain object with the same reads and writes instead.
- `one_hot_without_host_reads`: VQ-VAE's quantizer calls `F.one_hot`, which on the CPU reads
  the indices' min and max back to check them (two host reads a step); under the patch the
  one-hot is a scatter, the same tensor without the reads (the vaebench engine's step).

And the two places where vaebench uses a trainer's insides, kept here with the rest:

- `use_batch_loaders`: the trainer's item-by-item DataLoaders swapped for batch loaders (the
  same order, so the same batches), before its `train()` builds nothing else from them.
- `step_schedulers`: pythae's private `_schedulers_step`, fed the epoch's mean losses as its
  own loop feeds it (the vaebench engine's epoch end); its signature differs for the coupled
  (VAEGAN) trainer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from types import ModuleType

import torch
import torch.nn.functional
from pythae.trainers.training_callbacks import MetricConsolePrinterCallback, ProgressBarCallback


@contextlib.contextmanager
def autocast_forward(model: torch.nn.Module, device: str, precision: str):
    """Run each forward pass of `model` under bf16 autocast, for the duration of the block.

    The region is one forward, not the whole training loop: autocast caches its bf16 copies of
    the weights until its region exits, so one region around `trainer.train()` would keep
    feeding every step the initial weights (the loss stays flat). The backward runs outside
    autocast, as torch advises; evaluation afterwards runs in fp32. The losses that autocast
    refuses on CUDA run in fp32 outside it (`bce_outside_autocast`).
    """
    if precision == "fp32":
        yield
        return
    forward = model.forward

    @functools.wraps(forward)
    def forward_in_bf16(*args, **kwargs):
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            return forward(*args, **kwargs)

    model.forward = forward_in_bf16
    try:
        with bce_outside_autocast(model):
            yield
    finally:
        del model.forward  # the class's forward again


def binary_cross_entropy_fp32(input, target, *args, **kwargs):
    """`F.binary_cross_entropy` in fp32 with autocast off: what torch's autocast docs advise
    for the ops CUDA autocast refuses. Looked up at call time, so it is the real function."""
    with torch.autocast(device_type=input.device.type, enabled=False):
        return torch.nn.functional.binary_cross_entropy(
            input.float(), target.float(), *args, **kwargs
        )


class _FunctionalWith(ModuleType):
    """Stands in for `torch.nn.functional` inside one pythae module: everything is torch's,
    except the functions given."""

    def __init__(self, name: str, **replacements) -> None:
        super().__init__(name)
        for function_name, function in replacements.items():
            setattr(self, function_name, function)

    def __getattr__(self, name: str):
        return getattr(torch.nn.functional, name)


# one of each stand-in for the process: a compiled step guards on the `F` it saw, and a new
# stand-in each epoch would compile it again
_FP32_BCE = _FunctionalWith("F (fp32 BCE)", binary_cross_entropy=binary_cross_entropy_fp32)


@contextlib.contextmanager
def _functional_swapped(module: ModuleType | None, stand_in: ModuleType):
    """`module.F` is `stand_in` for the block, where `module` uses torch's `F`."""
    if module is None or getattr(module, "F", None) is not torch.nn.functional:
        yield
        return
    module.F = stand_in
    try:
        yield
    finally:
        module.F = torch.nn.functional


@contextlib.contextmanager
def bce_outside_autocast(model: torch.nn.Module):
    """For the block, the pythae module that defines `model`'s loss (VAEGAN's discriminator
    BCE, BetaVAE's `reconstruction_loss: bce`) calls BCE in fp32 outside autocast. Only that
    module's `F` name is swapped: torch itself, and every other caller, are left alone."""
    loss_function = getattr(type(model), "loss_function", None)
    module = sys.modules.get(getattr(loss_function, "__module__", ""), None)
    with _functional_swapped(module, _FP32_BCE):
        yield


class TraceableOutput:
    """What pythae's code does with a `ModelOutput` (built from keywords; read and written by
    attribute, by key and with `get`), as a plain object that `torch.compile` traces."""

    def __init__(self, **values) -> None:
        for name, value in values.items():
            setattr(self, name, value)

    def __getitem__(self, name: str):
        return getattr(self, name)

    def __setitem__(self, name: str, value) -> None:
        setattr(self, name, value)

    def __contains__(self, name: str) -> bool:
        return hasattr(self, name)

    def get(self, name: str, default=None):
        return getattr(self, name, default)


@contextlib.contextmanager
def traceable_model_outputs():
    """For the block, every loaded pythae or vaebench module that builds a `ModelOutput` builds
    a `TraceableOutput` instead (for compiled steps; eager code is left as it is outside)."""
    from pythae.models.base.base_utils import ModelOutput

    # every module that bound pythae's class by name (pythae's, ours, a family defined
    # elsewhere); read from the module's own namespace, so no lazy module loads anything
    modules = [
        module
        for module in list(sys.modules.values())
        if getattr(module, "__dict__", {}).get("ModelOutput") is ModelOutput
    ]
    for module in modules:
        module.ModelOutput = TraceableOutput
    try:
        yield
    finally:
        for module in modules:
            module.ModelOutput = ModelOutput


def one_hot_by_scatter(indices: torch.Tensor, num_classes: int = -1) -> torch.Tensor:
    """`F.one_hot(indices, num_classes)` for indices known to be in range: no host read."""
    if num_classes < 0:
        raise ValueError("one_hot_by_scatter needs num_classes")
    encoded = torch.zeros(*indices.shape, num_classes, dtype=torch.int64, device=indices.device)
    return encoded.scatter_(-1, indices.unsqueeze(-1), 1)


_SCATTER_ONE_HOT = _FunctionalWith("F (scatter one_hot)", one_hot=one_hot_by_scatter)


@contextlib.contextmanager
def one_hot_without_host_reads(model: torch.nn.Module):
    """For the block, the module that defines `model`'s quantizer (VQ-VAE) one-hot encodes by
    scatter; any other model is left alone."""
    quantizer = getattr(model, "quantizer", None)
    module = sys.modules.get(type(quantizer).__module__, None) if quantizer is not None else None
    with _functional_swapped(module, _SCATTER_ONE_HOT):
        yield


@contextlib.contextmanager
def without_best_model_copies(trainer):
    """pythae's trainers deep-copy the model each epoch its validation loss improves (to keep
    the best one) and save that copy at the end. The benchmark evaluates the final weights, so
    both are wasted (pythae's MNIST networks: ~0.1 s a copy, 0.2-0.7 s the save on this CPU).
    For the block: a deep copy of the model is the model, and the final save is skipped."""
    module = sys.modules[type(trainer).train.__module__]  # where train() looks up `deepcopy`
    real_deepcopy = module.deepcopy

    def deepcopy_but_the_model(obj, *args, **kwargs):
        return obj if obj is trainer.model else real_deepcopy(obj, *args, **kwargs)

    module.deepcopy = deepcopy_but_the_model
    trainer.save_model = lambda model, dir_path: None
    try:
        yield
    finally:
        module.deepcopy = real_deepcopy
        del trainer.save_model


def drop_pythae_console_callbacks(trainer) -> None:
    """pythae adds its own tqdm bars and console printer to every trainer; the benchmark prints
    its own progress. Called once the trainer has set its callbacks up (on_train_begin)."""
    handler = trainer.callback_handler
    handler.callbacks = [
        cb
        for cb in handler.callbacks
        if not isinstance(cb, (ProgressBarCallback, MetricConsolePrinterCallback))
    ]


@contextlib.contextmanager
def quiet_pythae():
    """pythae logs at INFO; the benchmark prints its own progress."""
    loggers = [
        logging.getLogger(n)
        for n in list(logging.root.manager.loggerDict)
        if n.startswith("pythae")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def use_batch_loaders(trainer, batch_size: int, make_loader) -> None:
    """The trainer's DataLoaders replaced by `make_loader(dataset, batch_size, shuffle)` (a
    loader that fetches a batch with one indexing, in the same order)."""
    trainer.train_loader = make_loader(trainer.train_dataset, batch_size, True)
    if trainer.eval_loader is not None:
        eval_batch = trainer.training_config.per_device_eval_batch_size
        trainer.eval_loader = make_loader(trainer.eval_dataset, eval_batch, True)


def step_schedulers(trainer, means: dict[str, float], coupled: bool) -> None:
    """pythae's `_schedulers_step` with the epoch's mean losses (`loss`, or VAEGAN's three)."""
    if coupled:
        trainer._schedulers_step(
            encoder_metrics=means.get("encoder_loss"),
            decoder_metrics=means.get("decoder_loss"),
            discriminator_metrics=means.get("discriminator_loss"),
        )
    else:
        trainer._schedulers_step(means.get("loss"))
