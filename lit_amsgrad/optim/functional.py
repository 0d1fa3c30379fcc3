"""Functional core of the EMA family (Adam, AMSGrad, AdamNC, Generic Adam) over tensor lists.

The paper's generic method x_{t+1} = x_t - alpha_t m_t / sqrt(V_t): all four optimizers are
this one update with different schedules for beta_1t, beta_2t and alpha_t and with or without
the running max of AMSGrad. The per-step scalars arrive already computed in
:class:`StepCoefficients`, so the kernels only touch tensors. In the ``"pytorch"`` mode the
operations and their order are torch's own (``torch/optim/adam.py``), which is what makes
that mode equal to ``torch.optim.Adam`` to the last bit on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class StepCoefficients:
    """The scalars of one step t, shared by every tensor that is at step t.

    ``step_size`` is the whole scalar multiplying m_t (schedule and first-moment bias
    correction included). ``v_divisor_sqrt`` divides sqrt(v) in the denominator (the
    ``"pytorch"`` mode's sqrt(1 - beta_2^t)); ``max_divisor`` divides v before the running
    max (the ``"max_debiased"`` mode's 1 - beta_2^t). ``None`` means no division.
    """

    beta1: float
    beta2: float
    step_size: float
    v_divisor_sqrt: float | None = None
    max_divisor: float | None = None


def ema_step_single(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    coefficients: list[StepCoefficients],
    *,
    amsgrad: bool,
    eps: float,
) -> None:
    """One step, tensor by tensor: the fastest eager path on CPU.

    The temporaries (the denominator, the debiased v) live in one scratch buffer per
    device and dtype, reused across tensors: on CPU a fresh large allocation per tensor
    costs page faults that torch's own loop pays and this one does not.
    """
    scratch = _Scratch(params)
    for i, param in enumerate(params):
        c = coefficients[i]
        grad, exp_avg, exp_avg_sq = grads[i], exp_avgs[i], exp_avg_sqs[i]
        exp_avg.lerp_(grad, 1 - c.beta1)
        exp_avg_sq.mul_(c.beta2).addcmul_(grad, grad, value=1 - c.beta2)
        buffer = scratch.like(param)
        if amsgrad:
            max_exp_avg_sq = max_exp_avg_sqs[i]
            if c.max_divisor is None:
                torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            else:
                debiased = torch.div(exp_avg_sq, c.max_divisor, out=buffer)
                torch.maximum(max_exp_avg_sq, debiased, out=max_exp_avg_sq)
            second_moment = max_exp_avg_sq
        else:
            second_moment = exp_avg_sq
        denom = torch.sqrt(second_moment, out=buffer)
        if c.v_divisor_sqrt is not None:
            denom.div_(c.v_divisor_sqrt)
        param.addcdiv_(exp_avg, denom.add_(eps), value=-c.step_size)


class _Scratch:
    """One flat buffer per (device, dtype), as large as the largest tensor of the step."""

    def __init__(self, params: list[Tensor]) -> None:
        sizes: dict[tuple, int] = {}
        for p in params:
            key = (p.device, p.dtype)
            sizes[key] = max(sizes.get(key, 0), p.numel())
        self.buffers = {
            key: torch.empty(n, device=key[0], dtype=key[1]) for key, n in sizes.items()
        }

    def like(self, param: Tensor) -> Tensor:
        return self.buffers[(param.device, param.dtype)][: param.numel()].view(param.shape)


def ema_step_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    c: StepCoefficients,
    *,
    amsgrad: bool,
    eps: float,
) -> None:
    """One step over tensors of one device, dtype and step t, with torch's foreach kernels."""
    torch._foreach_lerp_(exp_avgs, grads, 1 - c.beta1)
    torch._foreach_mul_(exp_avg_sqs, c.beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - c.beta2)
    if amsgrad:
        if c.max_divisor is None:
            torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        else:
            torch._foreach_maximum_(max_exp_avg_sqs, torch._foreach_div(exp_avg_sqs, c.max_divisor))
        denom = torch._foreach_sqrt(max_exp_avg_sqs)
    else:
        denom = torch._foreach_sqrt(exp_avg_sqs)
    if c.v_divisor_sqrt is not None:
        torch._foreach_div_(denom, c.v_divisor_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, -c.step_size)
