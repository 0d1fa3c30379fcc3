"""The diagnostics' statistics on the device, and their reading into metrics on the host.

Each parameter gets counts, sums, minima, maxima and a 256-bin histogram of log10(effective
step size) over a range shared by all parameters; the overall row is their reduction (minima
of minima, sums of counts), as an all-reduce over shards would compute it. What the device
computes for one logging step is packed into a single tensor and reaches the host in one
transfer; counts the host knows anyway (numel, which parameters have Gamma or vhat) stay there,
and where each number sits is worked out once per layout (``StepReader``).
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

BINS = 256
_LOG10_CLAMP = 45.0  # keeps an infinite step size (eps=0, v=0) from blowing up the range


Layout = tuple[tuple[int, bool, bool], ...]  # per parameter: (numel, has Gamma, has vhat)


def layout_of(
    invs: list[Tensor], prevs: list[Tensor | None], moments: list[tuple[Tensor, Tensor | None]]
) -> Layout:
    """What the host knows of one logging step without a transfer."""
    return tuple(
        (inv.numel(), prev is not None, m[1] is not None)
        for inv, prev, m in zip(invs, prevs, moments, strict=True)
    )


def device_stats(
    invs: list[Tensor],
    prevs: list[Tensor | None],
    moments: list[tuple[Tensor, Tensor | None]],
    watched: list[Tensor],
    log10: Callable[[Tensor], Tensor] = torch.log10,
) -> tuple[Tensor, Tensor]:
    """Everything one logging step computes on the device: the one definition, which runs
    as it is (eager) or traced and compiled into one kernel (``callbacks.compiled_stats``).

    ``invs[i]`` is inverse_lr of parameter i now, ``prevs[i]`` at the step before (None: no
    Gamma), ``moments[i]`` its (v, vhat), ``watched`` the tensors whose NaN/inf entries are
    counted; ``log10`` is what the histogram bins each coordinate by (the compiled kernel's
    is ``callbacks.bits_log10``, the same function to round-off). Returns (packed float64
    statistics, int32 histogram bin of every coordinate, offset by BINS per parameter);
    ``histogram`` counts the bins. Nothing here synchronises with the device: the histogram
    range comes from device tensors.
    """
    dev = invs[0].device
    extremes = [torch.aminmax(inv) for inv in invs]
    inv_min = _stack([e.min for e in extremes], dev)
    inv_max = _stack([e.max for e in extremes], dev)
    # log10 of the effective step: lo from the largest inverse_lr, hi from the smallest
    lo = (-torch.log10(inv_max.max())).clamp(-_LOG10_CLAMP, _LOG10_CLAMP)
    hi = (-torch.log10(inv_min.min())).clamp(-_LOG10_CLAMP, _LOG10_CLAMP)
    scale = BINS / (hi - lo).clamp_min(1e-12)
    gamma_neg, gamma_min, active, vhat_max, vhat_sum = [], [], [], [], []
    for inv, prev, (v, vhat) in zip(invs, prevs, moments, strict=True):
        if prev is not None:
            delta = inv - prev
            gamma_neg.append((delta < 0).sum())
            gamma_min.append(delta.min())
        if vhat is not None:
            active.append((vhat > v).sum())
            vhat_max.append(vhat.max())
            vhat_sum.append(vhat.sum(dtype=torch.float64))
    nonfinite = _nonfinite_counts(watched, dev)
    packed = torch.cat(
        [
            inv_min,
            inv_max,
            *(_stack(x, dev) for x in (gamma_neg, gamma_min, active, vhat_max, vhat_sum)),
            torch.stack([lo, hi]),
            torch.stack(nonfinite).sum().double().reshape(1) if nonfinite else inv_min[:0],
        ]
    )
    bins = torch.cat(
        [_bin_index(inv, lo, scale, dev, log10) + i * BINS for i, inv in enumerate(invs)]
    )
    return packed, bins


def histogram(bins: Tensor, parameters: int) -> Tensor:
    """The BINS counts of every parameter, flat (int64), from ``device_stats``' bins."""
    return torch.bincount(bins, minlength=parameters * BINS)


def to_host(packed: Tensor, extras: list[Tensor], counts: Tensor) -> tuple[list[float], np.ndarray]:
    """One logging step's results on the host: ``packed`` and then ``extras`` as floats, and
    ``histogram``'s counts. On an accelerator that is one concatenation and one
    device-to-host transfer; on the CPU the tensors are host memory already and are read
    where they are (a concatenation there cost as much as reading them)."""
    if packed.device.type == "cpu" and all(t.device.type == "cpu" for t in extras):
        values = packed.tolist()
        values.extend(t.item() for t in extras)
        return values, counts.numpy()
    parts = [packed, *extras, counts]
    dev = packed.device
    host = torch.cat([t.reshape(-1).to(dev, torch.float64) for t in parts]).cpu().numpy()
    head = host.size - counts.numel()
    return host[:head].tolist(), host[head:]


def _nonfinite_counts(watched: list[Tensor], dev: torch.device) -> list[Tensor]:
    """NaN/inf entries of the watched tensors, one count per shape: the tensors of one shape
    are summed element-wise first, so the compiled kernel reads them in one loop instead of
    one each (each reduction in a kernel costs its own buffer and loop). ``x - x != 0`` is
    true exactly where x is NaN or +-inf: two operations where ``~isfinite`` is five in the
    kernel. Both together took 15-16% off the compiled kernel of logistic regression and of
    the MLP."""
    by_shape: dict[torch.Size, Tensor] = {}
    for t in watched:
        bad = (t - t) != 0
        total = by_shape.get(t.shape)
        by_shape[t.shape] = bad.to(torch.int32) if total is None else total + bad
    return [total.sum().to(dev) for total in by_shape.values()]


def _stack(scalars: list[Tensor], dev: torch.device) -> Tensor:
    if not scalars:
        return torch.empty(0, dtype=torch.float64, device=dev)
    return torch.stack([t.to(dev, torch.float64) for t in scalars])


def _bin_index(
    inv: Tensor, lo: Tensor, scale: Tensor, dev: torch.device, log10: Callable[[Tensor], Tensor]
) -> Tensor:
    """The bin of log10(1 / inv) among BINS equal bins from lo, per coordinate, on ``dev``."""
    x = log10(inv.flatten() if inv.element_size() >= 4 else inv.flatten().float())
    lo, scale = lo.to(x.device, x.dtype), scale.to(x.device, x.dtype)
    # bin = (log10(1/inv) - lo) * scale; clamping first makes truncation a floor (and tames inf)
    x = (x * -scale - lo * scale).clamp(0, BINS - 1)
    # NaN state (on_nonfinite="log" goes on): bin 0. x != x, not isnan: inductor vectorizes it
    x = torch.where(x != x, 0.0, x)
    return x.to(dev, torch.int32)


def bin_edges(lo: float, hi: float) -> np.ndarray:
    """The BINS + 1 histogram edges in log10(effective step size)."""
    return lo + max(hi - lo, 1e-12) * np.arange(BINS + 1) / BINS


def medians_from_hist(counts: np.ndarray, lo: float, hi: float) -> list[float]:
    """Median of log10 values per row of ``counts`` (bins of ``bin_edges(lo, hi)``),
    interpolated inside its bin: within one bin width of the lower median (the ceil(n/2)-th
    smallest value); the bins span all parameters' range."""
    return medians_from_cumulative(counts.cumsum(axis=1).tolist(), lo, hi)


def medians_from_cumulative(cumulative: list[list[float]], lo: float, hi: float) -> list[float]:
    """``medians_from_hist`` of rows given as their cumulative counts, as Python lists: a
    logging step has a handful of rows, and a bisection per row in Python cost less than
    the numpy calls per row it replaced (each a few microseconds, more with cold caches)."""
    width = max(hi - lo, 1e-12) / BINS
    medians = []
    for cum in cumulative:
        half = cum[-1] * 0.5
        k = bisect.bisect_left(cum, half)  # the first bin reaching half (cum is nondecreasing)
        before = cum[k - 1] if k else 0
        in_bin = cum[k] - before
        frac = (half - before) / in_bin if in_bin > 0 else 0.0
        medians.append(lo + (k + frac) * width)
    return medians


class StepResult(NamedTuple):
    """A logging step read on the host."""

    metrics: dict[str, float]  # docs/design.md's keys of every row
    extras: dict[str, float]  # what rode along: the extras by name, then the NaN/inf count
    means: list[float | None]  # each row's mean vhat, the base of vhat_growth (None: no vhat)
    counts: np.ndarray  # each parameter's BINS histogram counts, [parameters, BINS]
    lo: float  # the histogram's range in log10(effective step), ``bin_edges(lo, hi)``
    hi: float

    def rows(self, per_parameter: bool) -> np.ndarray:
        """The histogram counts of the rows: all coordinates, then each parameter's."""
        overall = self.counts.sum(axis=0, keepdims=True)
        return np.concatenate([overall, self.counts]) if per_parameter else overall


class StepReader:
    """Reads one logging step's host values (``to_host``) into docs/design.md's metrics.

    Where each number sits in ``device_stats``' packed tensor, which rows have Gamma or vhat,
    and every key depend on the layout alone: they are worked out once here (``reader_for``
    keeps the readers), so a logging step only indexes. Row 0 is all coordinates together
    (the minimum of the minima, the maximum of the maxima, the sums of the counts: what an
    all-reduce over shards would compute), then one row per parameter when ``suffixes``
    names them. The numels and which parameters have Gamma or vhat are the host's own
    knowledge: they are not transferred.
    """

    def __init__(
        self,
        layout: Layout,
        watched: bool,
        extras: tuple[str, ...],
        prefix: str,
        suffixes: tuple[str, ...],
    ) -> None:
        p = len(layout)
        gammas = [i for i, (_, has_gamma, _) in enumerate(layout) if has_gamma]
        vhats = [i for i, (_, _, has_vhat) in enumerate(layout) if has_vhat]
        g, h = len(gammas), len(vhats)
        self.parameters, self.g, self.h = p, g, h
        # packed: inv_min[p], inv_max[p], gamma_neg[g], gamma_min[g], vhat_active[h],
        # vhat_max[h], vhat_sum[h], lo, hi, then the NaN/inf count when watched
        self.lo_at = 2 * p + 2 * g + 3 * h
        self.nonfinite_at = self.lo_at + 2 if watched else None
        self.extras, self.extras_at = extras, self.lo_at + 2 + int(watched)
        self.nonfinite_key = f"{prefix}/nonfinite"
        self.gamma_n = sum(layout[i][0] for i in gammas)
        self.vhat_n = sum(layout[i][0] for i in vhats)
        self.keys = [_keys(prefix, suffix) for suffix in suffixes]
        self.per_parameter = len(suffixes) > 1
        if self.per_parameter and len(suffixes) != p + 1:
            raise ValueError(f"{p} parameters need {p + 1} row suffixes, got {len(suffixes)}")
        # per parameter row: (index, index among those with Gamma, among those with vhat, n)
        self.parameter_rows = [
            (
                i,
                gammas.index(i) if has_gamma and n > 0 else None,
                vhats.index(i) if has_vhat and n > 0 else None,
                n,
            )
            for i, (n, has_gamma, has_vhat) in enumerate(layout)
        ]

    def __call__(self, values: list[float], counts: np.ndarray) -> StepResult:
        p, g, h = self.parameters, self.g, self.h
        lo, hi = values[self.lo_at], values[self.lo_at + 1]
        counts = counts.reshape(p, BINS)
        cumulative = counts.cumsum(axis=1)
        everything = cumulative.sum(axis=0).tolist()  # a sum of cumulative counts is cumulative
        rows = [everything, *cumulative.tolist()] if self.per_parameter else [everything]
        medians = medians_from_cumulative(rows, lo, hi)
        out: dict[str, float] = {}
        at = 2 * p  # gamma_neg, then gamma_min, vhat_active, vhat_max, vhat_sum
        gamma = vhat = None
        means: list[float | None] = [None]
        if self.gamma_n > 0:
            gamma = (sum(values[at : at + g]), min(values[at + g : at + 2 * g]), self.gamma_n)
        at += 2 * g
        if self.vhat_n > 0:
            vhat = (sum(values[at : at + h]), max(values[at + h : at + 2 * h]), self.vhat_n)
            means[0] = sum(values[at + 2 * h : at + 3 * h]) / self.vhat_n
        overall = (max(values[p : 2 * p]), medians[0], min(values[:p]), gamma, vhat)
        _row_metrics(out, self.keys[0], *overall)
        if self.per_parameter:
            gamma_at, vhat_at = 2 * p, 2 * p + 2 * g
            for (i, gi, vi, n), keys, median in zip(
                self.parameter_rows, self.keys[1:], medians[1:], strict=True
            ):
                gamma = (
                    None if gi is None else (values[gamma_at + gi], values[gamma_at + g + gi], n)
                )
                vhat = None if vi is None else (values[vhat_at + vi], values[vhat_at + h + vi], n)
                _row_metrics(out, keys, values[p + i], median, values[i], gamma, vhat)
                means.append(None if vi is None else values[vhat_at + 2 * h + vi] / n)
        extras = dict(zip(self.extras, values[self.extras_at :], strict=True))
        if self.nonfinite_at is not None:
            extras[self.nonfinite_key] = values[self.nonfinite_at]
        return StepResult(out, extras, means, counts, lo, hi)


@functools.lru_cache(maxsize=256)
def reader_for(
    layout: Layout, watched: bool, extras: tuple[str, ...], prefix: str, suffixes: tuple[str, ...]
) -> StepReader:
    """The reader of this layout, made once: a run logs with a handful of layouts."""
    return StepReader(layout, watched, extras, prefix, suffixes)


def _row_metrics(
    out: dict[str, float],
    keys: tuple[str, ...],
    inv_max: float,
    median: float,
    inv_min: float,
    gamma: tuple[float, float, int] | None,
    vhat: tuple[float, float, int] | None,
) -> None:
    """One row's metrics into ``out``: the one definition for the overall row and each
    parameter's. ``median`` is in log10; ``gamma`` is (coordinates with Gamma < 0, the least
    Gamma, coordinates with Gamma) and ``vhat`` (coordinates with vhat > v, the largest vhat,
    coordinates with vhat), or None where the row has none."""
    out[keys[0]] = _reciprocal(inv_max)
    out[keys[1]] = 10.0**median
    out[keys[2]] = _reciprocal(inv_min)
    if gamma is not None:
        out[keys[3]] = gamma[0] / gamma[2]
        out[keys[4]] = gamma[1]
    if vhat is not None:
        out[keys[5]] = vhat[0] / vhat[2]
        out[keys[6]] = vhat[1]


@functools.cache
def _keys(prefix: str, suffix: str) -> tuple[str, ...]:
    names = ("eff_lr/min", "eff_lr/median", "eff_lr/max", "gamma_neg_frac", "gamma_min")
    names += ("vhat_active_frac", "vhat_max")
    return tuple(f"{prefix}/{name}{suffix}" for name in names)


def _reciprocal(x: float) -> float:
    return 1.0 / x if x != 0 else float("inf")
