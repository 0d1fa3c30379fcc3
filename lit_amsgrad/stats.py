"""Means with their uncertainty: the one interval every multi-seed result of the project reports."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95
METHOD = (
    "95% Student t interval over seeds: mean +- t(0.975, n-1) * s / sqrt(n) "
    "(s: sample standard deviation); differences between optimizers are paired by seed"
)


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its two-sided ``LEVEL`` interval (None when n < 2 or a
    value is not finite: no interval can be claimed then)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def as_json(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean and Student t interval of independent values (one per seed)."""
    from scipy.stats import t

    values = [float(v) for v in values]
    if not values:
        raise ValueError("t_interval needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return Interval(mean, None, None, len(values))
    half = float(t.ppf(0.5 + level / 2, len(values) - 1)) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Interval:
    """``b - a`` seed by seed, and its t interval: both ran with the same seeds (initial
    weights, data order), so the pairing removes the noise they share."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return t_interval([y - x for x, y in zip(a, b, strict=True)])
