"""AdaShift (Zhou et al., ICLR 2019): decorrelate v_t from the current gradient.

The second moment is fed the gradient that just left a window of the last n gradients,
g_{t-n}, reduced per block with a max (the "spatial" operation); the first moment is the
beta_1-weighted average of the window. The first n steps only fill the window.

State: ``step``, ``exp_avg`` (the window average m_t), ``exp_avg_sq`` (v_t, one value per
block), ``grad_queue`` (the window as an [n, *shape] ring buffer, slot (t-1) mod n).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from . import fused as fused_kernels
from .core import AdaptiveOptimizer, _check_number, _fail
from .schedules import ConstantBeta

BLOCKS = ("tensor", "row", "element")


class AdaShift(AdaptiveOptimizer):
    """AdaShift with window ``n`` and blocks ``block``.

    ``block``: ``"tensor"`` (one v per parameter tensor, as the authors' code), ``"row"``
    (one v per slice along the first dimension, e.g. per output unit) or ``"element"`` (no
    spatial reduction). ``bias_correction="pytorch"`` debiases v by 1 - beta_2^(t-n), as the
    authors' code; the window average m_t needs no correction. ``foreach`` is accepted for a
    uniform interface; the step runs tensor by tensor.

    ``fused=True``: from step n + 2 on, the whole step as one compiled kernel (see
    :class:`AdaptiveOptimizer`) that updates the window average by the recurrence
    m_t = beta_1 m_{t-1} + (g_t - beta_1^n g_{t-n}) / sum_i beta_1^i, reading one slot of the
    window instead of all n (its round-off shrinks by beta_1 each step; in bfloat16 state it
    is about that of Adam's own EMA). The n warm-up steps and the first update run eagerly.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        *,
        n: int = 10,
        block: str = "tensor",
        lr_schedule: str = "constant",
        bias_correction: str = "none",
        bounds: Sequence[float] | None = None,
        decoupled_weight_decay: bool = False,
        foreach: bool | None = None,
        fused: bool = False,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, lr_schedule=lr_schedule,
            bias_correction=bias_correction, bounds=bounds,
            decoupled_weight_decay=decoupled_weight_decay, foreach=foreach, fused=fused, n=n,
            block=block,
        )  # fmt: skip

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        n = group["n"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise _fail("n", "an integer >= 1", n)
        if group["block"] not in BLOCKS:
            raise _fail("block", f"one of {list(BLOCKS)}", group["block"])
        _check_number("beta1_decay", group["beta1_decay"], lambda x: x == 1, "1 for AdaShift")

    def _init_moments(self, group: dict[str, Any], param: Tensor, state: dict) -> None:
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(self._reduce(group, param))
        state["grad_queue"] = param.new_zeros((group["n"], *param.shape))

    @staticmethod
    def _reduce(group: dict[str, Any], squared: Tensor) -> Tensor:
        """The spatial operation phi: max per block, kept broadcastable to the parameter."""
        block = group["block"]
        if block == "element" or squared.dim() == 0:
            return squared
        if block == "tensor":
            return squared.amax()
        return squared.amax(dim=tuple(range(1, squared.dim())), keepdim=True)

    def _window_weights(self, group: dict[str, Any], t: int, like: Tensor) -> Tensor:
        """Weights of the ring buffer's slots: beta_1^age / sum, age 0 for g_t."""
        n, beta1 = group["n"], group["betas"][0]
        ages = [(t - 1 - slot) % n for slot in range(n)]
        weights = torch.tensor([beta1**age for age in ages], dtype=torch.float64)
        return (weights / weights.sum()).to(like)

    def _update_moments_and_params(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict],
        foreach: bool,
    ) -> None:
        n, eps = group["n"], group["eps"]
        beta2 = group["betas"][1]
        for param, grad, state in zip(params, grads, states, strict=True):
            t = int(state["step"].item())
            queue = state["grad_queue"]
            slot = (t - 1) % n
            if t <= n:  # warm-up: fill the window, no update
                queue[slot].copy_(grad)
                state["step_size"], state["v_divisor_sqrt"] = 0.0, None
                continue
            shifted = queue[slot]  # g_{t-n}, about to leave the window
            state["exp_avg_sq"].mul_(beta2).add_(
                self._reduce(group, shifted * shifted), alpha=1 - beta2
            )
            shifted.copy_(grad)
            weights = self._window_weights(group, t, param)
            exp_avg = state["exp_avg"]
            torch.mv(queue.view(n, -1).t(), weights, out=exp_avg.view(-1))
            step_size = self._alpha(group, t)
            denom = state["exp_avg_sq"].sqrt()
            v_divisor_sqrt = None
            if group["bias_correction"] == "pytorch":
                v_divisor_sqrt = (1 - ConstantBeta(beta2).product(t - n)) ** 0.5
                denom = denom / v_divisor_sqrt
            param.addcdiv_(exp_avg, denom.add_(eps), value=-step_size)
            state["step_size"], state["v_divisor_sqrt"] = step_size, v_divisor_sqrt

    def _fused_step(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> None:
        n = group["n"]
        buckets = self._fused_buckets(params, states)
        for (_, _, t), indices in buckets.items():
            picked = [params[i] for i in indices]
            sub_grads = [grads[i] for i in indices]
            sub = [states[i] for i in indices]
            if t <= n + 1:  # warm-up and the first update read the whole window: eager
                self._eager_step(group, picked, sub_grads, sub)
                continue
            torch._foreach_add_([st["step"] for st in sub], 1.0)
            self._fused_kernel_step(group, picked, sub_grads, sub, int(t))

    def _fused_kernel_step(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict],
        t: int,
    ) -> None:
        n, (beta1, beta2) = group["n"], group["betas"]
        step_size, v_divisor_sqrt = self._alpha(group, t), None
        if group["bias_correction"] == "pytorch":
            v_divisor_sqrt = (1 - ConstantBeta(beta2).product(t - n)) ** 0.5
        for state in states:
            state["step_size"], state["v_divisor_sqrt"] = step_size, v_divisor_sqrt
        window = sum(beta1**i for i in range(n))
        values = self._fused_scalars(group, t)
        values.update(
            beta1=beta1, window_new=1 / window, window_old=beta1**n / window, beta2=beta2,
            one_minus_beta2=1 - beta2, step_size=step_size,
        )  # fmt: skip
        if v_divisor_sqrt is not None:
            values["v_divisor_sqrt"] = v_divisor_sqrt
        flags = fused_kernels.AdaShiftFlags(
            block=group["block"],
            v_divisor=v_divisor_sqrt is not None,
            weight_decay=self._weight_decay_mode(group),
            bounded=group["bounds"] is not None,
        )
        slot = torch.tensor((t - 1) % n, device=params[0].device)
        self._run_kernel(
            fused_kernels.kernel(flags, params),
            params, grads, [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states],
            [st["grad_queue"] for st in states],
            fused_kernels.pack(fused_kernels.ADASHIFT_SCALARS, values, params[0]), slot,
        )  # fmt: skip

    def _second_moments(self, group: dict[str, Any], param: Tensor, state: dict) -> tuple:
        return state["exp_avg_sq"], None
