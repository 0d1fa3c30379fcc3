"""Step-size and moment schedules as small functions of the step t (1-based), as in optax.

Each beta schedule also gives the product of its values up to t, which is what a bias
correction divides by (1 - prod); constant betas use ``beta ** t`` so that the
``"pytorch"`` mode reproduces torch's arithmetic exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

LR_SCHEDULES: dict[str, Callable[[int], float]] = {
    "constant": lambda t: 1.0,
    "inv_sqrt": lambda t: 1.0 / math.sqrt(t),
}


def lr_factor(name: str, t: int) -> float:
    """Multiplier of the base lr at step t: 1 (constant) or 1/sqrt(t) (the paper's theory)."""
    return LR_SCHEDULES[name](t)


@dataclass(frozen=True)
class ConstantBeta:
    """beta_t = beta."""

    beta: float

    def value(self, t: int) -> float:
        return self.beta

    def product(self, t: int) -> float:
        return self.beta**t


@dataclass(frozen=True)
class GeometricBeta:
    """beta_t = beta * decay^(t-1): the paper's beta_1t = beta_1 lambda^(t-1)."""

    beta: float
    decay: float

    def value(self, t: int) -> float:
        return self.beta * self.decay ** (t - 1)

    def product(self, t: int) -> float:
        return self.beta**t * self.decay ** (t * (t - 1) / 2)


@dataclass(frozen=True)
class PolynomialBeta:
    """beta_t = 1 - theta / t^r: AdamNC (theta = r = 1, v_t is the mean of g^2) and Generic Adam."""

    theta: float = 1.0
    r: float = 1.0

    def value(self, t: int) -> float:
        return 1.0 - self.theta / t**self.r

    def product(self, t: int) -> float:
        if self.theta == 1.0:
            return 0.0  # beta_1 = 0: the average is unbiased from the first step
        raise NotImplementedError("bias correction of 1 - theta/t^r needs theta = 1")


def first_moment_beta(beta1: float, decay: float) -> ConstantBeta | GeometricBeta:
    """The beta_1 schedule; a decay of exactly 1 keeps torch's ``beta ** t`` arithmetic."""
    return ConstantBeta(beta1) if decay == 1.0 else GeometricBeta(beta1, decay)
