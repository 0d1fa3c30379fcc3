"""AdaShift (Zhou et al., ICLR 2019): decorrelate v_t from the current gradient.

The second moment is fed the gradient that just left a window of the last n gradients,
g_{t-n}, reduced per block with a max (the "spatial" operation phi); the first moment is the
beta_1-weighted average of the window.

As the authors' code (``optimizer_all.py`` of QingruZhang/AdaShift_Release), a block steps only
once its v has been positive (their ``z`` mask, state ``active``): during the first n steps
the window fills and g_{t-n} is zero, and a parameter whose leaving gradients are exactly zero
(one first used late, an embedding row) does not step with m_t / eps. With
``bias_correction="pytorch"`` v is debiased by max(1e-8, 1 - beta_2^k), k the steps since the
block became active (their ``b2p``, state ``beta2_power``).

State: ``step``, ``exp_avg`` (the window average m_t), ``exp_avg_sq`` (v_t, one value per
block), ``active`` and ``beta2_power`` (per block), ``grad_queue`` (the window as an
[n, *shape] ring buffer, slot (t-1) mod n) and, for blocks that reduce, ``grad_queue_sq_max``
(phi(g^2) of each slot, stored when the gradient enters the window, so that v_t never reads
the window twice).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .core import AdaptiveOptimizer, _fail, check_number
from .scalars import StepScalars

BLOCKS = ("tensor", "row", "element")


def reduce_block(block: str, squared: Tensor) -> Tensor:
    """phi: the max of ``squared`` per block, kept broadcastable to the parameter: one value
    per tensor (``"tensor"``), per slice along the first dimension (``"row"``; on a 1-D
    tensor every element is its own slice) or per element (``"element"``)."""
    if (
        block == "element"
        or squared.numel() == 0  # nothing to reduce (a zero-size parameter)
        or squared.dim() == 0
        or (block == "row" and squared.dim() == 1)
    ):
        return squared
    if block == "tensor":
        return squared.amax()
    return squared.amax(dim=tuple(range(1, squared.dim())), keepdim=True)


class AdaShift(AdaptiveOptimizer):
    """AdaShift with window ``n`` and blocks ``block``.

    ``block``: ``"tensor"`` (one v per parameter tensor, as the authors' ``max``), ``"row"``
    (one v per slice along the first dimension, e.g. per output unit) or ``"element"`` (no
    spatial reduction, the authors' ``none``). m_t is kept by the recurrence
    m_t = beta_1 m_{t-1} + (g_t - beta_1^n g_{t-n}) / sum_i beta_1^i, the window average
    without reading the window (its round-off shrinks by beta_1 every step).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        *,
        n: int = 10,
        block: str = "tensor",
        **kwargs: Any,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, n=n, block=block, **kwargs)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        n = group["n"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise _fail("n", "an integer >= 1", n)
        if group["block"] not in BLOCKS:
            raise _fail("block", f"one of {list(BLOCKS)}", group["block"])
        check_number("beta1_decay", group["beta1_decay"], lambda x: x == 1, "1 for AdaShift")

    @staticmethod
    def _reduces(group: dict[str, Any], param: Tensor) -> bool:
        """Whether phi(g^2) is a reduction worth storing per slot."""
        return reduce_block(group["block"], param).shape != param.shape

    def init_state(self, group: dict[str, Any], param: Tensor) -> dict[str, Tensor]:
        block = torch.zeros_like(reduce_block(group["block"], param))
        state = {
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": block,
            "active": torch.zeros_like(block),
            "beta2_power": torch.ones_like(block),
            "grad_queue": param.new_zeros((group["n"], *param.shape)),
        }
        if self._reduces(group, param):
            state["grad_queue_sq_max"] = param.new_zeros((group["n"], *block.shape))
        return state

    def step_scalars(self, group: dict[str, Any], t: int) -> dict[str, Any]:
        n, (beta1, beta2) = group["n"], group["betas"]
        window = math.fsum(beta1**i for i in range(n))
        return dict(
            beta1=beta1, window_new=1 / window, window_old=beta1**n / window, beta2=beta2,
            one_minus_beta2=1 - beta2, eps=group["eps"], step_size=self.alpha(group, t),
            block=group["block"], debias=group["bias_correction"] == "pytorch",
        )  # fmt: skip

    def tensors_for_step(
        self, group: dict[str, Any], param: Tensor, state: dict[str, Any], t: int
    ) -> dict[str, Tensor]:
        """The moments, and the window slot of g_{t-n} (and of its phi(g^2)) as views: the
        slot step t reads and then overwrites with g_t."""
        return self._window_slots(group, param, state)[(t - 1) % group["n"]]

    def update_moments(self, grad: Tensor, state: dict[str, Tensor], s: StepScalars) -> None:
        shifted = state["shifted"]
        squared = state["shifted_sq"] if "shifted_sq" in state else shifted * shifted
        v = state["exp_avg_sq"]
        v.mul_(s.beta2).add_(squared, alpha=s.one_minus_beta2)
        active = state["active"]
        torch.maximum(active, (v > 0).to(active.dtype), out=active)  # the authors' z
        power = state["beta2_power"]  # b2p: beta_2^k while active, 1 before
        power.copy_(torch.where(active > 0, power * s.beta2, torch.ones_like(power)))
        state["exp_avg"].mul_(s.beta1).add_(grad * s.window_new - shifted * s.window_old)

    def after_update(self, grad: Tensor, state: dict[str, Tensor], s: StepScalars) -> None:
        """g_t and phi(g_t^2) replace g_{t-n} in the window."""
        if "shifted_sq" in state:
            state["shifted_sq"].copy_(reduce_block(s.block, grad * grad))
        state["shifted"].copy_(grad)

    def denominator(self, state: dict[str, Tensor], s: StepScalars) -> Tensor:
        """sqrt(v_t) + eps where the block is active, inf elsewhere (no step there)."""
        v, _ = self.second_moments(state, s)
        denom = v.sqrt().add_(s.eps)
        return torch.where(state["active"] > 0, denom, torch.full_like(denom, math.inf))

    def second_moments(
        self, state: dict[str, Tensor], s: StepScalars
    ) -> tuple[Tensor, Tensor | None]:
        v = state["exp_avg_sq"]
        if s.debias:
            v = v / (1 - state["beta2_power"]).clamp_min(1e-8)
        return v, None

    #: the state every step reads whole, and the state the per-slot views are made from
    _MOMENT_KEYS = ("exp_avg", "exp_avg_sq", "active", "beta2_power")
    _HELD_KEYS = (*_MOMENT_KEYS, "grad_queue", "grad_queue_sq_max")

    def _window_slots(
        self, group: dict[str, Any], param: Tensor, state: dict
    ) -> list[dict[str, Tensor]]:
        """For each slot of the window, the tensors a step at that slot reads and writes
        (the slots as views), built once per window: building them anew for 60 tensors every
        step costs about 100 us of host time. Rebuilt when a state tensor is replaced."""
        # made here, not in __init__: pickling and deepcopy keep only the state
        cache = self.__dict__.setdefault("_window_cache", {})
        entry = cache.get(id(state))
        # the identities of the held tensors (the entry keeps them alive, so no id is reused)
        held_ids = tuple(map(id, map(state.get, self._HELD_KEYS)))
        if entry is None or entry[0] != held_ids:
            self._upgrade(group, param, state)
            sq_max = state.get("grad_queue_sq_max")
            sq_slots = sq_max.unbind(0) if sq_max is not None else None
            moments = {key: state[key] for key in self._MOMENT_KEYS}
            slots = []
            for i, shifted in enumerate(state["grad_queue"].unbind(0)):
                tensors = {**moments, "shifted": shifted}
                if sq_slots is not None:
                    tensors["shifted_sq"] = sq_slots[i]
                slots.append(tensors)
            held = [state.get(key) for key in self._HELD_KEYS]
            entry = cache[id(state)] = (held_ids, slots, held)
        return entry[1]

    def _upgrade(self, group: dict[str, Any], param: Tensor, state: dict) -> None:
        """States saved by earlier versions: phi(g^2) per slot rebuilt from the window, the
        active mask from v > 0 and beta2_power from the steps since the window filled."""
        if self._reduces(group, param) and "grad_queue_sq_max" not in state:
            state["grad_queue_sq_max"] = torch.stack(
                [reduce_block(group["block"], g * g) for g in state["grad_queue"]]
            )
        if "active" not in state:
            state["active"] = (state["exp_avg_sq"] > 0).to(state["exp_avg_sq"].dtype)
            k = max(int(state["step"].item()) - group["n"], 0)
            power = torch.full_like(state["exp_avg_sq"], group["betas"][1] ** k)
            state["beta2_power"] = torch.where(state["active"] > 0, power, 1.0)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.pop("_window_cache", None)  # views of the windows being replaced
        super().load_state_dict(state_dict)
