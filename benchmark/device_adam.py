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

    @torch.no_grad()
    def step(self, gate: torch.Tensor | None = None) -> None:
        for group in self.optimizer.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                slot = self._slot(param)
                self._update(param, param.grad, slot, lr, beta1, beta2, eps, decay, gate)

    def _slot(self, param: torch.Tensor) -> dict:
        slot = self.optimizer.state[param]
        if not slot:  # as torch initialises it, with the count on the parameter's device
            slot["step"] = torch.zeros((), dtype=torch.float64, device=param.device)
            slot["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            slot["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return slot

    def _update(self, param, grad, slot, lr, beta1, beta2, eps, decay, gate) -> None:
        """torch.optim.adam._single_tensor_adam (capturable=False, differentiable=False), with
        `step.item()` replaced by tensor arithmetic on the device."""
        step_t, exp_avg, exp_avg_sq = slot["step"], slot["exp_avg"], slot["exp_avg_sq"]
        if gate is not None:  # the state as it was: kept where the gate is closed
            old = (param.clone(), exp_avg.clone(), exp_avg_sq.clone(), step_t.clone())
        step_t += 1
        if decay != 0:
            if self.decoupled:
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
