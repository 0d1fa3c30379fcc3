"""The diagnostics' statistics on the device, and their reading into metrics on the host.

Each parameter gets counts, sums, minima, maxima and a 256-bin histogram of log10(effective
step size) over a range shared by all parameters; the overall row is their reduction (minima
of minima, sums of counts), as an all-reduce over shards would compute it. What the device
computes for one logging step is packed into a single tensor and reaches the host in one
transfer; counts the host knows anyway (numel, which parameters have Gamma or vhat) stay there,
and where each number sits is worked out once per layout (``StepReader``).
"""

from __future__ import annotations

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
    statistics, the int32 histogram counts: BINS per parameter, flat). The histogram is an
    ``index_add`` of ones at each coordinate's bin, which the compiled kernel does itself (a
    pass of atomic adds after the binning loop): in a fit it took logistic regression's
    hook from 0.194 to 0.169 ms against an eager ``bincount`` after the kernel, and left the
    MLP's level. Nothing here synchronises with the device: the histogram range comes from
    device tensors.
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
    counts = torch.zeros(len(invs) * BINS, dtype=torch.int32, device=dev)
    return packed, counts.index_add_(0, bins, torch.ones_like(bins))


def to_host(
    packed: list[Tensor], extras: list[list[Tensor]], counts: list[Tensor]
) -> tuple[np.ndarray, np.ndarray]:
    """Logging steps of one layout on the host, all at once: their ``packed`` values, each
    followed by that step's ``extras``, as a [steps, values] float64 array, and their
    histogram counts as [steps, parameters * BINS]. On an accelerator that is one
    concatenation and one device-to-host transfer (a transfer waits for the device: one per
    read, however many logging steps it reads); on the CPU the tensors are host memory
    already and are stacked where they are."""
    steps, extra = len(packed), [t for step in extras for t in step]
    if packed[0].device.type == "cpu" and all(t.device.type == "cpu" for t in extra):
        values = torch.stack(packed)
        if extra:
            values = torch.cat([values, torch.stack(extra).to(torch.float64).view(steps, -1)], 1)
        return values.numpy(), torch.stack(counts).numpy()
    return _by_one_transfer(packed, extra, counts)


def _by_one_transfer(
    packed: list[Tensor], extra: list[Tensor], counts: list[Tensor]
) -> tuple[np.ndarray, np.ndarray]:
    """``to_host`` on an accelerator (``extra``: every step's extras, one after the other):
    everything as float64 in one tensor, one transfer, split on the host. It runs on any
    device, which is how the tests check it without one."""
    steps, dev = len(packed), packed[0].device
    parts = [*packed, *extra, *counts]
    host = torch.cat([t.reshape(-1).to(dev, torch.float64) for t in parts]).cpu().numpy()
    n, e = packed[0].numel() * steps, len(extra)
    values = np.concatenate([host[:n].reshape(steps, -1), host[n : n + e].reshape(steps, -1)], 1)
    return values, host[n + e :].reshape(steps, -1).astype(np.int64)


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
    return medians_from_cumulative(counts.cumsum(axis=-1), lo, hi).tolist()


def medians_from_cumulative(
    cumulative: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float
) -> np.ndarray:
    """``medians_from_hist`` of rows given as their cumulative counts ([..., BINS], any
    leading shape; ``lo`` and ``hi`` broadcast against the leading shape): every row of every
    logging step read together in a handful of numpy calls."""
    width = np.maximum(np.subtract(hi, lo), 1e-12) / BINS
    half = cumulative[..., -1] * 0.5
    k = (cumulative < half[..., None]).sum(axis=-1)  # the first bin reaching half
    before = np.where(k > 0, _at(cumulative, k - 1), 0)
    in_bin = _at(cumulative, k) - before
    frac = np.divide(half - before, in_bin, out=np.zeros(half.shape), where=in_bin > 0)
    return lo + (k + frac) * width


def _at(rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    """rows[..., index] for one index per row (clipped into the row)."""
    index = np.clip(index, 0, rows.shape[-1] - 1)
    return np.take_along_axis(rows, index[..., None], axis=-1)[..., 0]


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
    """Reads logging steps' host values (``to_host``) into docs/design.md's metrics.

    Where each number sits in ``device_stats``' packed tensor, which rows have Gamma or vhat,
    and every key depend on the layout alone: they are worked out once here (``reader_for``
    keeps the readers), so reading only indexes. It reads many logging steps of one layout
    at once: each metric is one [steps, rows] array, all of them a handful of numpy calls
    whatever the number of steps or parameters. Row 0 is all coordinates together (the
    minimum of the minima, the maximum of the maxima, the sums of the counts: what an
    all-reduce over shards would compute), then one row per parameter when ``suffixes`` names
    them. The numels and which parameters have Gamma or vhat are the host's own knowledge:
    they are not transferred.
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
        # vhat_max[h], vhat_sum[h], lo, hi, then the NaN/inf count when watched, the extras
        self.lo_at = 2 * p + 2 * g + 3 * h
        self.extra_keys = (*extras, *((f"{prefix}/nonfinite",) if watched else ()))
        first_extra = self.lo_at + 2 + int(watched)
        self.extra_columns = [
            *range(first_extra, first_extra + len(extras)),
            *((self.lo_at + 2,) if watched else ()),
        ]
        self.per_parameter = len(suffixes) > 1
        if self.per_parameter and len(suffixes) != p + 1:
            raise ValueError(f"{p} parameters need {p + 1} row suffixes, got {len(suffixes)}")
        self.suffixes, self.rows = suffixes, len(suffixes)
        self.parameter_columns = list(range(p)) if self.per_parameter else []
        self.gamma = _RowsOf(layout, gammas, self.per_parameter)
        self.vhat = _RowsOf(layout, vhats, self.per_parameter)
        every = list(range(self.rows))
        #: the metrics and their rows, in the order of the columns ``__call__`` builds
        self.metrics = (
            ("eff_lr/min", every),
            ("eff_lr/median", every),
            ("eff_lr/max", every),
            ("gamma_neg_frac", self.gamma.rows),
            ("gamma_min", self.gamma.rows),
            ("vhat_active_frac", self.vhat.rows),
            ("vhat_max", self.vhat.rows),
        )
        self.keys = [
            f"{prefix}/{name}{suffixes[row]}" for name, rows in self.metrics for row in rows
        ]

    def __call__(self, values: np.ndarray, counts: np.ndarray) -> list[StepResult]:
        """``values`` [steps, values] and ``counts`` [steps, parameters * BINS] (``to_host``)
        as one ``StepResult`` per logging step."""
        p, g, h = self.parameters, self.g, self.h
        steps = values.shape[0]
        lo, hi = values[:, self.lo_at], values[:, self.lo_at + 1]
        counts = counts.reshape(steps, p, BINS)
        cumulative = counts.cumsum(axis=2)
        rows = cumulative.sum(axis=1, keepdims=True)  # a sum of cumulative counts is cumulative
        if self.per_parameter:
            rows = np.concatenate([rows, cumulative], axis=1)
        medians = medians_from_cumulative(rows, lo[:, None], hi[:, None])
        columns = {  # each [steps, the metric's rows]
            "eff_lr/min": _reciprocal(
                _rows(values[:, p : 2 * p], np.max, True, self.parameter_columns)
            ),
            "eff_lr/median": 10.0**medians,
            "eff_lr/max": _reciprocal(_rows(values[:, :p], np.min, True, self.parameter_columns)),
        }
        at = 2 * p
        if self.gamma.rows:
            negative = self.gamma.of(values[:, at : at + g], np.sum)
            columns["gamma_neg_frac"] = negative / self.gamma.numels
            columns["gamma_min"] = self.gamma.of(values[:, at + g : at + 2 * g], np.min)
        at += 2 * g
        means: list[list[float]] = [[] for _ in range(steps)]
        if self.vhat.rows:
            active = self.vhat.of(values[:, at : at + h], np.sum)
            columns["vhat_active_frac"] = active / self.vhat.numels
            columns["vhat_max"] = self.vhat.of(values[:, at + h : at + 2 * h], np.max)
            sums = self.vhat.of(values[:, at + 2 * h : at + 3 * h], np.sum)
            means = (sums / self.vhat.numels).tolist()
        table = [columns[name] for name, rows in self.metrics if rows]
        metrics = np.concatenate(table, axis=1).tolist()
        extras = values[:, self.extra_columns].tolist()
        lo, hi = lo.tolist(), hi.tolist()
        results = []
        for k in range(steps):
            row_means: list[float | None] = [None] * self.rows
            for row, mean in zip(self.vhat.rows, means[k], strict=True):
                row_means[row] = mean
            metric = dict(zip(self.keys, metrics[k], strict=True))
            extra = dict(zip(self.extra_keys, extras[k], strict=True))
            results.append(StepResult(metric, extra, row_means, counts[k], lo[k], hi[k]))
        return results


class _RowsOf:
    """The rows of a metric that only some parameters have (Gamma, vhat): the overall row
    when any coordinate has it, then each parameter that has it and has coordinates (a
    parameter without a snapshot has no Gamma); which of the packed columns fill them, and
    each row's coordinate count."""

    def __init__(self, layout: Layout, members: list[int], per_parameter: bool) -> None:
        total = sum(layout[i][0] for i in members)
        self.overall = total > 0
        own = [(1 + i, j) for j, i in enumerate(members) if layout[i][0] > 0]
        own = own if per_parameter else []
        self.rows = ([0] if self.overall else []) + [row for row, _ in own]
        self.columns = [j for _, j in own]
        numels = ([total] if self.overall else []) + [layout[row - 1][0] for row, _ in own]
        self.numels = np.array(numels, dtype=float)

    def of(self, block: np.ndarray, reduce: Callable) -> np.ndarray:
        """[steps, rows] of this metric from its packed [steps, members] ``block``."""
        return _rows(block, reduce, self.overall, self.columns)


def _rows(block: np.ndarray, reduce: Callable, overall: bool, columns: list[int]) -> np.ndarray:
    """[steps, rows]: ``reduce`` over ``block``'s columns (the overall row) when ``overall``,
    then the ``columns`` of ``block`` themselves."""
    parts = [reduce(block, axis=1, keepdims=True)] if overall else []
    if columns:
        parts.append(block[:, columns])
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


@functools.lru_cache(maxsize=256)
def reader_for(
    layout: Layout, watched: bool, extras: tuple[str, ...], prefix: str, suffixes: tuple[str, ...]
) -> StepReader:
    """The reader of this layout, made once: a run logs with a handful of layouts."""
    return StepReader(layout, watched, extras, prefix, suffixes)


def _reciprocal(x: np.ndarray) -> np.ndarray:
    """1 / x, and inf where x is 0 (either sign: an infinite effective step)."""
    return np.divide(1.0, x, out=np.full(x.shape, np.inf), where=x != 0)
