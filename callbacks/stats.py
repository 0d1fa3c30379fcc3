"""The diagnostics' statistics as reducible rows, and their reduction to metrics on the host.

Each parameter becomes one float64 row of counts, sums, minima, maxima and a 256-bin histogram
of log10(effective step size) over a range shared by all parameters. Rows combine by sum, min
or max column by column (``REDUCE``), so the overall row is a reduction of the parameter rows
and a sharded strategy could all-reduce them (the range first, by min/max). What the device
computes for one logging step is packed into a single tensor and reaches the host in one
transfer; counts the host knows anyway (numel, which parameters have Gamma or vhat) stay there.
"""

from __future__ import annotations

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
COL = {name: i for i, name in enumerate(COLUMNS)}
HIST = len(COLUMNS)  # histogram counts occupy columns HIST .. HIST + BINS - 1
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
    """The BINS counts of every parameter, flat (float64), from ``device_stats``' bins."""
    return torch.bincount(bins, minlength=parameters * BINS).double()


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


def unpack_rows(
    packed: np.ndarray, layout: Layout, watched: bool
) -> tuple[np.ndarray, float, float, float | None, list[float]]:
    """(rows [parameters, HIST + BINS], lo, hi, nonfinite or None, the rest) from
    ``device_stats``' packed values followed by anything else and ``histogram``, after their
    one transfer."""
    p = len(layout)
    has_g = [i for i, (_, has, _) in enumerate(layout) if has]
    has_v = [i for i, (_, _, has) in enumerate(layout) if has]
    g, h = len(has_g), len(has_v)
    head = packed[: packed.size - p * BINS]
    rows = np.zeros((p, HIST + BINS))
    rows[:, COL["n"]] = [n for n, _, _ in layout]
    rows[:, COL["inv_min"]], rows[:, COL["inv_max"]] = head[:p], head[p : 2 * p]
    rows[:, COL["gamma_min"]], rows[:, COL["vhat_max"]] = _EMPTY["gamma_min"], _EMPTY["vhat_max"]
    at = 2 * p
    rows[has_g, COL["gamma_n"]] = rows[has_g, COL["n"]]
    rows[has_g, COL["gamma_neg"]], rows[has_g, COL["gamma_min"]] = (
        head[at : at + g],
        head[at + g : at + 2 * g],
    )
    at += 2 * g
    rows[has_v, COL["vhat_n"]] = rows[has_v, COL["n"]]
    rows[has_v, COL["vhat_active"]] = head[at : at + h]
    rows[has_v, COL["vhat_max"]] = head[at + h : at + 2 * h]
    rows[has_v, COL["vhat_sum"]] = head[at + 2 * h : at + 3 * h]
    at += 3 * h
    lo, hi = head[at : at + 2].tolist()
    at += 2
    bad = float(head[at]) if watched else None
    rows[:, HIST:] = packed[packed.size - p * BINS :].reshape(p, BINS)
    return rows, lo, hi, bad, head[at + int(watched) :].tolist()


def reduce_rows(rows: np.ndarray) -> np.ndarray:
    """The row of all coordinates together: what an all-reduce over shards would compute."""
    out = rows.sum(axis=0)
    for name, op in REDUCE.items():
        out[COL[name]] = rows[:, COL[name]].min() if op == "min" else rows[:, COL[name]].max()
    return out


def bin_edges(lo: float, hi: float) -> np.ndarray:
    """The BINS + 1 histogram edges in log10(effective step size)."""
    return lo + max(hi - lo, 1e-12) * np.arange(BINS + 1) / BINS


def medians_from_hist(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Median of log10 values per row of ``counts``, interpolated inside its bin: within one
    bin width of the lower median (the ceil(n/2)-th smallest value); the bins span all
    parameters' range."""
    cum = counts.cumsum(axis=1)
    half = cum[:, -1] / 2.0
    k = np.minimum((cum < half[:, None]).sum(axis=1), BINS - 1)  # first bin reaching half
    r = np.arange(len(counts))
    before = np.where(k > 0, cum[r, k - 1], 0.0)
    in_bin = counts[r, k]
    frac = np.where(in_bin > 0, (half - before) / np.where(in_bin > 0, in_bin, 1.0), 0.0)
    return edges[k] + frac * (edges[k + 1] - edges[k])


def rows_metrics(
    rows: np.ndarray, edges: np.ndarray, prefix: str, suffixes: list[str]
) -> tuple[dict[str, float], list[float | None]]:
    """docs/design.md's keys for every row (row i under ``suffixes[i]``; Gamma and vhat keys
    only where the row has them), and each row's mean vhat, the base of ``vhat_growth``
    (None without a running max)."""
    medians = (10.0 ** medians_from_hist(rows[:, HIST:], edges)).tolist()
    columns = dict(zip(COLUMNS, rows[:, :HIST].T.tolist(), strict=True))
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
