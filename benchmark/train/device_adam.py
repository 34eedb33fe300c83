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
        parameter, in float64 (an integer count is exact in both), one tensor per group and
        value (read once, here, not in a step)."""
        for group in self.optimizer.param_groups:
            shared: dict[tuple, torch.Tensor] = {}
            for param in group["params"]:
                slot = self.optimizer.state.get(param)
                if slot and "step" in slot:
                    value = float(slot["step"])
                    key = (value, param.device)
                    if key not in shared:
                        shared[key] = torch.tensor(value, dtype=torch.float64, device=param.device)
                    slot["step"] = shared[key]

    def compile(self, options: dict) -> None:
        """Each step through torch.compile: the per-parameter updates fused. The compiled
        update is one per process and `options` (it takes the tensors as arguments), so the
        next cell's optimiser runs the same code. Every parameter's state is made now, so that
        no step adds to it (a parameter that never gets a gradient is never updated)."""
        for group in self.optimizer.param_groups:
            self._slots(group["params"], group["params"])
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
            slots = self._slots(group["params"], params)
            counts = list({id(slot["step"]): slot["step"] for slot in slots}.values())
            which = tuple(next(i for i, c in enumerate(counts) if c is s["step"]) for s in slots)
            beta1, beta2 = group["betas"]
            self._update_group(
                params,
                [p.grad for p in params],
                [slot["exp_avg"] for slot in slots],
                [slot["exp_avg_sq"] for slot in slots],
                counts,
                which,
                (group["lr"], beta1, beta2, group["eps"], group["weight_decay"]),
                self.decoupled,
                gate,
            )

    def _slots(self, group: list[torch.Tensor], stepping: list[torch.Tensor]) -> list[dict]:
        """The state of each stepping parameter. Parameters whose counts are equal share one
        count tensor (one increment and one pair of bias corrections a step, not one per
        parameter); a parameter that skips this step while others of its count step gets a
        count of its own first, so every count stays exactly torch's."""
        fresh = [p for p in stepping if not self.optimizer.state[p]]
        if fresh:  # as torch initialises them, their (equal) count on their device
            count = torch.zeros((), dtype=torch.float64, device=fresh[0].device)
            for param in fresh:
                self._init_slot(param, count)
        stepping_ids = {id(p) for p in stepping}
        moving = {id(self.optimizer.state[p]["step"]) for p in stepping}
        for param in group:
            slot = self.optimizer.state[param]
            if slot and id(param) not in stepping_ids and id(slot["step"]) in moving:
                slot["step"] = slot["step"].clone()
        return [self.optimizer.state[p] for p in stepping]

    def _init_slot(self, param: torch.Tensor, count: torch.Tensor) -> None:
        slot = self.optimizer.state[param]
        slot["step"] = count
        slot["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        slot["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)


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


def update_group(
    params, grads, exp_avgs, exp_avg_sqs, counts, which, hyper, decoupled, gate
) -> None:
    """torch.optim.adam._single_tensor_adam (capturable=False, differentiable=False) over one
    parameter group, with `step.item()` replaced by tensor arithmetic on the device: each
    count in `counts` is incremented once and gives its bias corrections to the parameters
    that share it (`which[i]`: parameter i's count).

    Where the 0-dim bool `gate` is false, nothing moves: the count is not incremented, and the
    update's coefficients are chosen (torch.where, exact) so that each term adds an exact zero:
    the first moment's weight is 0, the second moment is scaled by 1 and gets 0 * grad², the
    step size is 0. With the gate open the coefficients are torch's own values."""
    lr, beta1, beta2, eps, decay = hyper
    dtype = params[0].dtype if params else torch.float32
    corrections = []
    for count in counts:
        count += 1 if gate is None else gate
        bias_correction1 = 1 - torch.pow(beta1, count)
        bias_correction2 = 1 - torch.pow(beta2, count)
        negative_step_size = (lr / bias_correction1).to(dtype).neg()
        bias_correction2_sqrt = bias_correction2.sqrt().to(dtype)
        if gate is not None:  # a count that never moved has corrections 1 - 1 = 0: not used
            negative_step_size = torch.where(gate, negative_step_size, 0.0)
            bias_correction2_sqrt = torch.where(gate, bias_correction2_sqrt, 1.0)
        corrections.append((negative_step_size, bias_correction2_sqrt))
    if gate is None:
        first, second, decayed = 1 - beta1, beta2, 1 - lr * decay
    else:
        first = torch.where(gate, torch.tensor(1 - beta1, dtype=dtype), 0.0)
        second = torch.where(gate, torch.tensor(beta2, dtype=dtype), 1.0)
        decayed = torch.where(gate, torch.tensor(1 - lr * decay, dtype=dtype), 1.0)
        squared = gate.to(dtype)
    for param, grad, exp_avg, exp_avg_sq, index in zip(
        params, grads, exp_avgs, exp_avg_sqs, which, strict=True
    ):
        if decay != 0:
            if decoupled:
                param.mul_(decayed)
            else:
                grad = grad.add(param, alpha=decay)
        exp_avg.lerp_(grad, first)
        exp_avg_sq.mul_(second).addcmul_(
            grad, grad.conj() if gate is None else grad.conj() * squared, value=1 - beta2
        )
        negative_step_size, bias_correction2_sqrt = corrections[index]
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        # addcdiv_(exp_avg, denom, value=-step_size) with the value a tensor: (v * t1) / t2
        param.add_(exp_avg.mul(negative_step_size).div_(denom))
