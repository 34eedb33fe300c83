"""Adam and AdamW whose step never reads a value back to the host.

torch's Adam (its default single-tensor path, what pythae's trainers use on the CPU) keeps the
step count in a tensor and reads it with `.item()` every step to compute the bias corrections
as Python floats: a host synchronisation on a GPU, and what stops a step from being captured.
`DeviceAdam` does the same arithmetic with the count on the device: the bias corrections are
float64 tensors there, rounded to float32 where torch rounds its Python floats, so in fp32 its
updates equal torch's bit for bit (tested). A `gate` (a 0-dim bool tensor on the device) skips
a step without a Python branch: the update, the moments and the count keep their old values,
as when pythae's coupled trainer does not step that optimiser.

It wraps a real `torch.optim.Adam`/`AdamW`: the learning-rate schedulers act on that one's
`param_groups`, and its `state_dict()` is what rolling checkpoints keep.
"""

from __future__ import annotations

import types

import torch


class DeviceAdam:
    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            raise TypeError(f"DeviceAdam wraps Adam or AdamW, not {type(optimizer).__name__}")
        for group in optimizer.param_groups:
            if group["amsgrad"] or group["maximize"]:
                raise ValueError("DeviceAdam does not do amsgrad or maximize")
        self.optimizer = optimizer
        self.decoupled = isinstance(optimizer, torch.optim.AdamW)
        self._update_group = update_group  # or its compiled form (`compile`)
        self._adopt_counts()

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
        self._adopt_counts()

    def _adopt_counts(self) -> None:
        """A state torch's Adam made or loaded (a resumed cell): each step count beside its
        parameter, in float64 (an integer count is exact in both)."""
        for param, slot in self.optimizer.state.items():
            if "step" in slot:
                slot["step"] = torch.as_tensor(slot["step"]).to(param.device, torch.float64)

    def compile(self, options: dict) -> None:
        """Each step through torch.compile: the per-parameter updates fused. The compiled
        update is one per process and `options` (it takes the tensors as arguments), so the
        next cell's optimiser runs the same code. Every parameter's state is made now, so that
        no step adds to it (a parameter that never gets a gradient is never updated)."""
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                self._slot(param)
        shapes = tuple(
            tuple(p.shape) for group in self.optimizer.param_groups for p in group["params"]
        )
        key = (tuple(sorted(options.items())), self.decoupled, shapes)
        if key not in _COMPILED_UPDATES:
            _COMPILED_UPDATES[key] = compiled_separately(update_group, options)
        self._update_group = _COMPILED_UPDATES[key]

    @torch.no_grad()
    def step(self, gate: torch.Tensor | None = None) -> None:
        for group in self.optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            slots = [self._slot(p) for p in params]
            beta1, beta2 = group["betas"]
            self._update_group(
                params,
                [p.grad for p in params],
                [slot["exp_avg"] for slot in slots],
                [slot["exp_avg_sq"] for slot in slots],
                [slot["step"] for slot in slots],
                (group["lr"], beta1, beta2, group["eps"], group["weight_decay"]),
                self.decoupled,
                gate,
            )

    def _slot(self, param: torch.Tensor) -> dict:
        slot = self.optimizer.state[param]
        if not slot:  # as torch initialises it, with the count on the parameter's device
            slot["step"] = torch.zeros((), dtype=torch.float64, device=param.device)
            slot["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            slot["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return slot


_COMPILED_UPDATES: dict[tuple, object] = {}


def compiled_separately(function, options: dict):
    """`torch.compile(function)` with a compile cache of its own. torch keeps compiled code on
    the function's code object, with a limit of 8 variants (then it runs eagerly); every
    family, dataset and optimiser of a suite would share one. A copy of the code object gives
    each its own."""
    copy = types.FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    return torch.compile(copy, options=options)


def update_group(params, grads, exp_avgs, exp_avg_sqs, steps, hyper, decoupled, gate) -> None:
    """torch.optim.adam._single_tensor_adam (capturable=False, differentiable=False) over one
    parameter group, with `step.item()` replaced by tensor arithmetic on the device; where the
    0-dim bool `gate` is false, everything keeps its value."""
    lr, beta1, beta2, eps, decay = hyper
    for param, grad, exp_avg, exp_avg_sq, step_t in zip(
        params, grads, exp_avgs, exp_avg_sqs, steps, strict=True
    ):
        if gate is not None:  # the state as it was: kept where the gate is closed
            old = (param.clone(), exp_avg.clone(), exp_avg_sq.clone(), step_t.clone())
        step_t += 1
        if decay != 0:
            if decoupled:
                param.mul_(1 - lr * decay)
            else:
                grad = grad.add(param, alpha=decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad.conj(), value=1 - beta2)
        bias_correction1 = 1 - torch.pow(beta1, step_t)
        bias_correction2 = 1 - torch.pow(beta2, step_t)
        step_size = (lr / bias_correction1).to(param.dtype)
        bias_correction2_sqrt = bias_correction2.sqrt().to(param.dtype)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        # addcdiv_(exp_avg, denom, value=-step_size) with the value a tensor: (v * t1) / t2
        param.add_(exp_avg.mul(-step_size).div_(denom))
        if gate is not None:
            for now, before in zip((param, exp_avg, exp_avg_sq, step_t), old, strict=True):
                now.copy_(torch.where(gate, now, before))
