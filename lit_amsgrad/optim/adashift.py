"""AdaShift (Zhou et al., ICLR 2019): decorrelate v_t from the current gradient.

The second moment is fed the gradient that just left a window of the last n gradients,
g_{t-n}, reduced per block with a max (the "spatial" operation); the first moment is the
beta_1-weighted average of the window. The first n steps only fill the window.

State: ``step``, ``exp_avg`` (the window average m_t), ``exp_avg_sq`` (v_t, one value per
block), ``grad_queue`` (the window as an [n, *shape] ring buffer, slot (t-1) mod n) and, for
the ``"tensor"`` and ``"row"`` blocks, ``grad_queue_sq_max`` (phi(g^2) of each slot, stored
when the gradient enters the window, so that v_t never reads the window twice).
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
    is about that of Adam's own EMA), and reading phi(g_{t-n}^2) from ``grad_queue_sq_max``
    instead of reducing the slot again. The n warm-up steps and the first update run eagerly.
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
        if self._stores_sq_max(group, param):
            state["grad_queue_sq_max"] = param.new_zeros((group["n"], *state["exp_avg_sq"].shape))

    @staticmethod
    def _reduce(group: dict[str, Any], squared: Tensor) -> Tensor:
        """The spatial operation phi: max per block, kept broadcastable to the parameter."""
        return fused_kernels.reduce_block(group["block"], squared)

    @staticmethod
    def _stores_sq_max(group: dict[str, Any], param: Tensor) -> bool:
        """Whether phi(g^2) is a reduction worth storing per slot (not for element blocks)."""
        return group["block"] != "element" and param.dim() > 0

    def _sq_max(self, group: dict[str, Any], param: Tensor, state: dict) -> Tensor | None:
        """The stored phi(g^2) per slot; rebuilt from the window for a state saved without
        it (checkpoints of versions before it was kept)."""
        if not self._stores_sq_max(group, param):
            return None
        sq_max = state.get("grad_queue_sq_max")
        if sq_max is None:
            queue = state["grad_queue"]
            sq_max = torch.stack([self._reduce(group, g * g) for g in queue])
            state["grad_queue_sq_max"] = sq_max
        return sq_max

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
            sq_max = self._sq_max(group, param, state)
            slot = (t - 1) % n
            if t <= n:  # warm-up: fill the window, no update
                queue[slot].copy_(grad)
                if sq_max is not None:
                    sq_max[slot] = self._reduce(group, grad * grad)
                state["step_size"], state["v_divisor_sqrt"] = 0.0, None
                continue
            shifted = queue[slot]  # g_{t-n}, about to leave the window
            squared = sq_max[slot] if sq_max is not None else shifted * shifted
            state["exp_avg_sq"].mul_(beta2).add_(squared, alpha=1 - beta2)
            shifted.copy_(grad)
            if sq_max is not None:
                sq_max[slot] = self._reduce(group, grad * grad)
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
        for device, t, picked, sub_grads, sub in self._fused_buckets(params, grads, states):
            if t <= n + 1:  # warm-up and the first update read the whole window: eager
                self._eager_step(group, picked, sub_grads, sub)
                continue
            self._fused_kernel_step(group, picked, sub_grads, sub, int(t), device)

    def _fused_kernel_step(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict],
        t: int,
        device: torch.device,
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
        scalars = fused_kernels.pack(fused_kernels.ADASHIFT_SCALARS, values, params[0])
        index = (t - 1) % n
        windows = [self._window_slots(group, p, st) for p, st in zip(params, states, strict=True)]
        # one kernel reads the stored phi(g^2); element blocks and 0-dim tensors square the slot
        for stored in (True, False):
            part = [i for i, w in enumerate(windows) if (w[1] is not None) == stored]
            if not part:
                continue
            sub = [states[i] for i in part]
            self._run_fused(
                flags,
                [[params[i] for i in part], [grads[i] for i in part],
                 [st["exp_avg"] for st in sub], [st["exp_avg_sq"] for st in sub],
                 [windows[i][0][index] for i in part],
                 [windows[i][1][index] for i in part] if stored else [],
                 self._fused_steps(sub, device)],
                scalars,
            )  # fmt: skip

    def _window_slots(
        self, group: dict[str, Any], param: Tensor, state: dict
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...] | None]:
        """The slots of ``grad_queue`` and ``grad_queue_sq_max`` as views, built once per
        window: the fused step passes one slot of each to its kernel, and indexing 2 x 60
        tensors anew every step would cost about 100 us of host time."""
        # made here, not in __init__: pickling and deepcopy keep only torch's own attributes
        cache = self.__dict__.setdefault("_window_cache", {})
        entry = cache.get(id(state))
        if (
            entry is None
            or entry[0] is not state["grad_queue"]
            or entry[1] is not state.get("grad_queue_sq_max")
        ):
            queue, sq_max = state["grad_queue"], self._sq_max(group, param, state)
            slots = sq_max.unbind(0) if sq_max is not None else None
            entry = cache[id(state)] = (queue, sq_max, queue.unbind(0), slots)
        return entry[2], entry[3]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.pop("_window_cache", None)  # views of the windows being replaced
        super().load_state_dict(state_dict)

    def _second_moments(self, group: dict[str, Any], param: Tensor, state: dict) -> tuple:
        return state["exp_avg_sq"], None
