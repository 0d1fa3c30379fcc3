"""The diagnostics' statistics as reducible rows, and their reduction to metrics on the host.

Each parameter becomes one float64 row of counts, sums, minima, maxima and a 256-bin histogram
of log10(effective step size) over a range shared by all parameters. Rows combine by sum, min
or max column by column (``REDUCE``), so the overall row is a reduction of the parameter rows
and a sharded strategy could all-reduce them (the range first, by min/max). What the device
computes for one logging step is packed into a single tensor and reaches the host in one
transfer; counts the host knows anyway (numel, which parameters have Gamma or vhat) stay there.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import Tensor

BINS = 256
COLUMNS = (
    "n",  # coordinates
    "inv_min",  # min inverse_lr = 1 / max effective step
    "inv_max",  # max inverse_lr = 1 / min effective step
    "gamma_n",  # coordinates with a previous-step snapshot (0: no Gamma this step)
    "gamma_neg",  # coordinates with Gamma_t < 0
    "gamma_min",
    "vhat_n",  # coordinates with a running max vhat (0: the optimizer keeps none)
    "vhat_active",  # coordinates with vhat_t > v_t
    "vhat_max",
    "vhat_sum",
)
REDUCE = {"inv_min": "min", "gamma_min": "min", "inv_max": "max", "vhat_max": "max"}  # else sum
_EMPTY = {"gamma_min": float("inf"), "vhat_max": float("-inf")}
_LOG10_CLAMP = 45.0  # keeps an infinite step size (eps=0, v=0) from blowing up the range


Layout = list[tuple[int, bool, bool]]  # per parameter: (numel, has Gamma, has vhat)


def layout_of(
    invs: list[Tensor], prevs: list[Tensor | None], moments: list[tuple[Tensor, Tensor | None]]
) -> Layout:
    """What the host knows of one logging step without a transfer."""
    return [
        (inv.numel(), prev is not None, m[1] is not None)
        for inv, prev, m in zip(invs, prevs, moments, strict=True)
    ]


def device_stats(
    invs: list[Tensor],
    prevs: list[Tensor | None],
    moments: list[tuple[Tensor, Tensor | None]],
    watched: list[Tensor],
) -> tuple[Tensor, Tensor]:
    """Everything one logging step computes on the device: the one definition, which runs
    as it is (eager) or traced and compiled into one kernel (``callbacks.compiled_stats``).

    ``invs[i]`` is inverse_lr of parameter i now, ``prevs[i]`` at the step before (None: no
    Gamma), ``moments[i]`` its (v, vhat), ``watched`` the tensors whose NaN/inf entries are
    counted. Returns (packed float64 statistics, int32 histogram bin of every coordinate,
    offset by BINS per parameter); ``histogram`` counts the bins. Nothing here synchronises
    with the device: the histogram range comes from device tensors.
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
    nonfinite = [(~torch.isfinite(t)).sum().to(dev) for t in watched]
    packed = torch.cat(
        [
            inv_min,
            inv_max,
            *(_stack(x, dev) for x in (gamma_neg, gamma_min, active, vhat_max, vhat_sum)),
            torch.stack([lo, hi]),
            torch.stack(nonfinite).sum().double().reshape(1) if nonfinite else inv_min[:0],
        ]
    )
    bins = torch.cat([_bin_index(inv, lo, scale, dev) + i * BINS for i, inv in enumerate(invs)])
    return packed, bins


def histogram(bins: Tensor, parameters: int) -> Tensor:
    """The BINS counts of every parameter, flat (int64), from ``device_stats``' bins."""
    return torch.bincount(bins, minlength=parameters * BINS)


def to_host(parts: list[Tensor]) -> np.ndarray:
    """The tensors, flattened, as one float64 host array: one device-to-host transfer (on
    the CPU, numpy views concatenated: no torch op at all)."""
    if all(t.device.type == "cpu" for t in parts):
        return np.concatenate([t.reshape(-1).numpy() for t in parts], dtype=np.float64)
    dev = parts[0].device
    return torch.cat([t.reshape(-1).to(dev, torch.float64) for t in parts]).cpu().numpy()


def _stack(scalars: list[Tensor], dev: torch.device) -> Tensor:
    if not scalars:
        return torch.empty(0, dtype=torch.float64, device=dev)
    return torch.stack([t.to(dev, torch.float64) for t in scalars])


def _bin_index(inv: Tensor, lo: Tensor, scale: Tensor, dev: torch.device) -> Tensor:
    """The bin of log10(1 / inv) among BINS equal bins from lo, per coordinate, on ``dev``."""
    x = torch.log10(inv.flatten() if inv.element_size() >= 4 else inv.flatten().float())
    lo, scale = lo.to(x.device, x.dtype), scale.to(x.device, x.dtype)
    # bin = (log10(1/inv) - lo) * scale; clamping first makes truncation a floor (and tames inf)
    x = (x * -scale - lo * scale).clamp(0, BINS - 1)
    # NaN state (on_nonfinite="log" goes on): bin 0. x != x, not isnan: inductor vectorizes it
    x = torch.where(x != x, 0.0, x)
    return x.to(dev, torch.int32)


@dataclasses.dataclass
class Transfer:
    """One logging step's transfer, read on the host: the packed values of ``device_stats``,
    anything appended after them, and ``histogram``'s counts."""

    columns: dict[str, list[float]]  # every COLUMNS entry, one value per parameter
    counts: np.ndarray  # [parameters, BINS]
    lo: float
    hi: float
    nonfinite: float | None
    rest: list[float]

    @classmethod
    def read(cls, host: np.ndarray, layout: Layout, watched: bool) -> Transfer:
        p = len(layout)
        head = host[: host.size - p * BINS].tolist()
        g = sum(has_gamma for _, has_gamma, _ in layout)
        h = sum(has_vhat for _, _, has_vhat in layout)
        it = iter(head)
        take = lambda k: [next(it) for _ in range(k)]  # noqa: E731
        inv_min, inv_max, g_neg, g_min = take(p), take(p), take(g), take(g)
        act, v_max, v_sum, (lo, hi) = take(h), take(h), take(h), take(2)
        bad = next(it) if watched else None
        gamma, vhat = (
            iter(zip(g_neg, g_min, strict=True)),
            iter(zip(act, v_max, v_sum, strict=True)),
        )
        columns: dict[str, list[float]] = {name: [] for name in COLUMNS}
        for (n, has_gamma, has_vhat), lo_i, hi_i in zip(layout, inv_min, inv_max, strict=True):
            neg, low = next(gamma) if has_gamma else (0.0, _EMPTY["gamma_min"])
            active, high, total = next(vhat) if has_vhat else (0.0, _EMPTY["vhat_max"], 0.0)
            values = (n, lo_i, hi_i, n if has_gamma else 0, neg, low, n if has_vhat else 0)
            for name, value in zip(COLUMNS, (*values, active, high, total), strict=True):
                columns[name].append(float(value))
        counts = host[host.size - p * BINS :].reshape(p, BINS)
        return cls(columns, counts, lo, hi, bad, list(it))

    def rows(self, per_parameter: bool) -> tuple[dict[str, list[float]], np.ndarray]:
        """(columns, counts) of the rows to report: all coordinates together first (what an
        all-reduce over shards would compute, ``REDUCE``), then each parameter's."""
        overall = {
            name: [_REDUCERS[REDUCE.get(name, "sum")](values)]
            for name, values in self.columns.items()
        }
        counts = self.counts.sum(axis=0, keepdims=True)
        if not per_parameter:
            return overall, counts
        columns = {name: overall[name] + values for name, values in self.columns.items()}
        return columns, np.concatenate([counts, self.counts])


_REDUCERS = {"sum": sum, "min": min, "max": max}


def bin_edges(lo: float, hi: float) -> np.ndarray:
    """The BINS + 1 histogram edges in log10(effective step size)."""
    return lo + max(hi - lo, 1e-12) * np.arange(BINS + 1) / BINS


def medians_from_hist(counts: np.ndarray, lo: float, hi: float) -> list[float]:
    """Median of log10 values per row of ``counts`` (bins of ``bin_edges(lo, hi)``),
    interpolated inside its bin: within one bin width of the lower median (the ceil(n/2)-th
    smallest value); the bins span all parameters' range. Row by row: a logging step has a
    handful of rows, and a search per row costs a third of the vectorised numpy expression."""
    width = max(hi - lo, 1e-12) / BINS
    medians = []
    for row, cum in zip(counts, counts.cumsum(axis=1), strict=True):
        half = float(cum[-1]) * 0.5
        k = int(cum.searchsorted(half))  # the first bin reaching half (cum is nondecreasing)
        in_bin = float(row[k])
        frac = (half - (float(cum[k]) - in_bin)) / in_bin if in_bin > 0 else 0.0
        medians.append(lo + (k + frac) * width)
    return medians


def rows_metrics(
    columns: dict[str, list[float]],
    counts: np.ndarray,
    lo: float,
    hi: float,
    prefix: str,
    suffixes: list[str],
) -> tuple[dict[str, float], list[float | None]]:
    """docs/design.md's keys for every row (row i under ``suffixes[i]``; Gamma and vhat keys
    only where the row has them), and each row's mean vhat, the base of ``vhat_growth``
    (None without a running max)."""
    medians = [10.0**m for m in medians_from_hist(counts, lo, hi)]
    out: dict[str, float] = {}
    means: list[float | None] = []
    for i, suffix in enumerate(suffixes):
        keys = _keys(prefix, suffix)
        out[keys[0]] = _reciprocal(columns["inv_max"][i])
        out[keys[1]] = medians[i]
        out[keys[2]] = _reciprocal(columns["inv_min"][i])
        gamma_n, vhat_n = columns["gamma_n"][i], columns["vhat_n"][i]
        if gamma_n > 0:
            out[keys[3]] = columns["gamma_neg"][i] / gamma_n
            out[keys[4]] = columns["gamma_min"][i]
        if vhat_n > 0:
            out[keys[5]] = columns["vhat_active"][i] / vhat_n
            out[keys[6]] = columns["vhat_max"][i]
        means.append(columns["vhat_sum"][i] / vhat_n if vhat_n > 0 else None)
    return out, means


@functools.cache
def _keys(prefix: str, suffix: str) -> tuple[str, ...]:
    names = ("eff_lr/min", "eff_lr/median", "eff_lr/max", "gamma_neg_frac", "gamma_min")
    names += ("vhat_active_frac", "vhat_max")
    return tuple(f"{prefix}/{name}{suffix}" for name in names)


def _reciprocal(x: float) -> float:
    return 1.0 / x if x != 0 else float("inf")
