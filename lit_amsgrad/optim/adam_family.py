"""Adam, AMSGrad, AdamNC and Generic Adam: one EMA rule, four choices of schedule and max.

| optimizer   | beta_2t              | running max | alpha_t                    |
| ----------- | -------------------- | ----------- | -------------------------- |
| Adam        | beta_2               | no          | lr * schedule(t)           |
| AMSGrad     | beta_2               | yes         | lr * schedule(t)           |
| AdamNC      | 1 - 1/t              | no          | lr * schedule(t)           |
| GenericAdam | 1 - theta / t^r      | no          | lr * schedule(t) / t^s     |
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from torch import Tensor

from .core import BIAS_CORRECTIONS, EMAOptimizer, _fail, check_number
from .schedules import PolynomialBeta

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


class Adam(EMAOptimizer):
    """Adam (Kingma & Ba) in the paper's notation; ``bias_correction="none"`` is the paper's.

    With ``bias_correction="pytorch"`` it equals ``torch.optim.Adam`` (and, with
    ``decoupled_weight_decay=True``, ``torch.optim.AdamW``) bit for bit on CPU, and loads
    their state dicts. ``fused=True``: the whole step as one compiled kernel.
    """


class AMSGrad(EMAOptimizer):
    """AMSGrad, the paper's Algorithm 2: steps with v_hat_t = max(v_hat_{t-1}, v_t).

    ``bias_correction``: ``"none"`` (the paper), ``"pytorch"`` (equals
    ``torch.optim.Adam(amsgrad=True)``: the max is over the raw v and the debiasing comes
    after, so the effective step can grow), ``"max_debiased"`` (optax: the max is over the
    debiased v, so the effective step never grows). ``fused=True``: the whole step as one
    compiled kernel (README, Benchmarks: its speed against torch's fused step).
    """

    bias_corrections = BIAS_CORRECTIONS
    keeps_running_max = True


class AdamNC(EMAOptimizer):
    """AdamNC, the paper's Algorithm 3: beta_2t = 1 - 1/t, so v_t is the plain mean of g^2,
    and beta_1t = beta_1 * beta1_decay^(t-1). ``betas`` is (beta_1,).

    Its guarantee (Gamma_t >= 0) needs ``lr_schedule="inv_sqrt"``, as in the paper's theorem.
    """

    beta2_rule = "1 - 1/t"

    def __init__(self, params: Params, lr: float = 1e-3, betas=(0.9,), **kwargs: Any) -> None:
        super().__init__(params, lr, betas, **kwargs)

    def beta2_schedule(self, group: dict[str, Any]) -> PolynomialBeta:
        return PolynomialBeta(1.0, 1.0)


class GenericAdam(EMAOptimizer):
    """Generic Adam (Chen, Shen, Zou, Liu, JMLR 2022): beta_2t = 1 - theta/t^r and
    alpha_t = lr * schedule(t) / t^s. It converges when 0 < r <= 2s < 2; other values are
    allowed (to study divergence) with a warning. ``betas`` is (beta_1,).
    """

    beta2_rule = "1 - theta / t^r"

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas=(0.9,),
        *,
        theta: float = 1.0,
        r: float = 1.0,
        s: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, lr, betas, theta=theta, r=r, s=s, **kwargs)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        check_number("theta", group["theta"], lambda x: 0 < x <= 1, "in (0, 1]")
        check_number("r", group["r"], lambda x: x > 0, "> 0")
        check_number("s", group["s"], lambda x: x >= 0, ">= 0")
        if group["bias_correction"] == "pytorch" and group["theta"] != 1.0:
            raise _fail("bias_correction", "'none' when theta != 1", group["bias_correction"])
        if not group["r"] <= 2 * group["s"] < 2:
            warnings.warn(
                f"GenericAdam converges when 0 < r <= 2s < 2; got r={group['r']}, s={group['s']}",
                stacklevel=3,
            )

    def beta2_schedule(self, group: dict[str, Any]) -> PolynomialBeta:
        return PolynomialBeta(group["theta"], group["r"])

    def alpha(self, group: dict[str, Any], t: int) -> float:
        return super().alpha(group, t) / t ** group["s"]
