"""The diagnostics' statistics as reducible rows, and their reduction to metrics on the host.

Each parameter becomes one float64 row of counts, sums, minima, maxima and a 256-bin histogram
of log10(effective step size) over a range shared by all parameters. Rows combine by sum, min
or max column by column (``REDUCE``), so the overall row is a reduction of the parameter rows
and a sharded strategy could all-reduce them (the range first, by min/max). What the device
computes for one logging step is packed into a single tensor and reaches the host in one
transfer; counts the host knows anyway (numel, which parameters have Gamma or vhat) stay there.
"""

from __future__ import annotations

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


def pack_rows(
    invs: list[Tensor], prevs: list[Tensor | None], moments: list[tuple[Tensor, Tensor | None]]
) -> tuple[Tensor, Layout]:
    """Everything one logging step computes on the device, flattened into one float64 tensor.

    ``invs[i]`` is inverse_lr of parameter i now, ``prevs[i]`` at the step before (None: no
    Gamma), ``moments[i]`` its (v, vhat). Nothing here synchronises with the device: the
    histogram range comes from device tensors. Counts known on the host stay in ``Layout``.
    """
    dev = invs[0].device
    extremes = [torch.aminmax(inv) for inv in invs]
    inv_min = _stack([e.min for e in extremes], dev)
    inv_max = _stack([e.max for e in extremes], dev)
    # log10 of the effective step: lo from the largest inverse_lr, hi from the smallest
    lo = (-torch.log10(inv_max.max())).clamp(-_LOG10_CLAMP, _LOG10_CLAMP)
    hi = (-torch.log10(inv_min.min())).clamp(-_LOG10_CLAMP, _LOG10_CLAMP)
    scale = BINS / (hi - lo).clamp_min(1e-12)
    gamma_neg, gamma_min, active, vhat_max, vhat_sum, hists = [], [], [], [], [], []
    for inv, prev, (v, vhat) in zip(invs, prevs, moments, strict=True):
        if prev is not None:
            delta = inv - prev
            gamma_neg.append(torch.count_nonzero(delta < 0))
            gamma_min.append(delta.min())
            del delta
        if vhat is not None:
            active.append(torch.count_nonzero(vhat > v))
            vhat_max.append(vhat.max())
            vhat_sum.append(vhat.sum(dtype=torch.float32 if vhat.element_size() < 4 else None))
        hists.append(_histogram(inv, lo, scale))
    parts = [
        inv_min,
        inv_max,
        *(_stack(x, dev) for x in (gamma_neg, gamma_min)),
        *(_stack(x, dev) for x in (active, vhat_max, vhat_sum)),
        torch.stack([h.to(dev) for h in hists]).flatten().double(),
        torch.stack([lo, hi]),
    ]
    layout = [
        (inv.numel(), prev is not None, m[1] is not None)
        for inv, prev, m in zip(invs, prevs, moments, strict=True)
    ]
    return torch.cat(parts), layout


def _stack(scalars: list[Tensor], dev: torch.device) -> Tensor:
    if not scalars:
        return torch.empty(0, dtype=torch.float64, device=dev)
    return torch.stack([t.to(dev) for t in scalars]).double()


def _histogram(inv: Tensor, lo: Tensor, scale: Tensor) -> Tensor:
    """Counts of log10(1 / inv) in BINS equal bins from lo: six passes, no host sync."""
    x = torch.log10(inv.flatten() if inv.element_size() >= 4 else inv.flatten().float())
    lo, scale = lo.to(x.device, x.dtype), scale.to(x.device, x.dtype)
    # bin = (log10(1/inv) - lo) * scale; clamping first makes truncation a floor (and tames inf)
    x.mul_(-scale).sub_(lo * scale).clamp_(0, BINS - 1)
    x.nan_to_num_(nan=0.0)  # NaN state (on_nonfinite="log" goes on): bin 0, not a crash
    return torch.bincount(x.int(), minlength=BINS)


def unpack_rows(packed: np.ndarray, layout: Layout) -> tuple[np.ndarray, float, float]:
    """(rows [parameters, HIST + BINS], lo, hi) from ``pack_rows`` after its one transfer."""
    p = len(layout)
    g = sum(has_gamma for _, has_gamma, _ in layout)
    h = sum(has_vhat for _, _, has_vhat in layout)
    sizes = [p, p, g, g, h, h, h, p * BINS, 2]
    inv_min, inv_max, g_neg, g_min, act, v_max, v_sum, hist, (lo, hi) = np.split(
        packed, np.cumsum(sizes)[:-1]
    )
    rows = np.zeros((p, HIST + BINS))
    rows[:, COL["n"]] = [n for n, _, _ in layout]
    rows[:, COL["inv_min"]], rows[:, COL["inv_max"]] = inv_min, inv_max
    rows[:, COL["gamma_min"]], rows[:, COL["vhat_max"]] = _EMPTY["gamma_min"], _EMPTY["vhat_max"]
    has_g = np.array([x for _, x, _ in layout], dtype=bool)
    has_v = np.array([x for _, _, x in layout], dtype=bool)
    rows[has_g, COL["gamma_n"]] = rows[has_g, COL["n"]]
    rows[has_g, COL["gamma_neg"]], rows[has_g, COL["gamma_min"]] = g_neg, g_min
    rows[has_v, COL["vhat_n"]] = rows[has_v, COL["n"]]
    rows[has_v, COL["vhat_active"]], rows[has_v, COL["vhat_max"]] = act, v_max
    rows[has_v, COL["vhat_sum"]] = v_sum
    rows[:, HIST:] = hist.reshape(p, BINS)
    return rows, float(lo), float(hi)


def reduce_rows(rows: np.ndarray) -> np.ndarray:
    """The row of all coordinates together: what an all-reduce over shards would compute."""
    out = rows.sum(axis=0)
    for name, op in REDUCE.items():
        out[COL[name]] = rows[:, COL[name]].min() if op == "min" else rows[:, COL[name]].max()
    return out


def bin_edges(lo: float, hi: float) -> np.ndarray:
    """The BINS + 1 histogram edges in log10(effective step size)."""
    return lo + max(hi - lo, 1e-12) * np.arange(BINS + 1) / BINS


def median_from_hist(counts: np.ndarray, edges: np.ndarray) -> float:
    """Median of log10 values, interpolated inside its bin: within one bin width of the lower
    median (the ceil(n/2)-th smallest value); the bins span all parameters' range."""
    half = counts.sum() / 2.0
    cum = np.cumsum(counts)
    k = int(np.searchsorted(cum, half))
    before = cum[k - 1] if k > 0 else 0.0
    frac = (half - before) / counts[k] if counts[k] > 0 else 0.0
    return float(edges[k] + frac * (edges[k + 1] - edges[k]))


def row_metrics(row: np.ndarray, edges: np.ndarray, prefix: str, suffix: str) -> dict[str, float]:
    """docs/design.md's keys for one row; Gamma and vhat keys only when the row has them."""

    def key(name: str) -> str:
        return f"{prefix}/{name}{suffix}"

    out = {
        key("eff_lr/min"): _reciprocal(row[COL["inv_max"]]),
        key("eff_lr/median"): 10.0 ** median_from_hist(row[HIST:], edges),
        key("eff_lr/max"): _reciprocal(row[COL["inv_min"]]),
    }
    if row[COL["gamma_n"]] > 0:
        out[key("gamma_neg_frac")] = float(row[COL["gamma_neg"]] / row[COL["gamma_n"]])
        out[key("gamma_min")] = float(row[COL["gamma_min"]])
    if row[COL["vhat_n"]] > 0:
        out[key("vhat_active_frac")] = float(row[COL["vhat_active"]] / row[COL["vhat_n"]])
        out[key("vhat_max")] = float(row[COL["vhat_max"]])
    return out


def vhat_mean(row: np.ndarray) -> float | None:
    """Mean vhat of a row, the base of ``vhat_growth``; None without a running max."""
    return float(row[COL["vhat_sum"]] / row[COL["vhat_n"]]) if row[COL["vhat_n"]] > 0 else None


def _reciprocal(x: float) -> float:
    return 1.0 / float(x) if x != 0 else float("inf")
