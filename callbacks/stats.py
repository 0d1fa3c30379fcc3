"""The diagnostics' statistics as reducible rows, and their reduction to metrics on the host.

Each parameter becomes one float64 row of counts, sums, minima, maxima and a 256-bin histogram
of log10(effective step size) over a range shared by all parameters. Rows combine by sum, min
or max column by column (``REDUCE``), so the overall row is a reduction of the parameter rows
and a sharded strategy could all-reduce them; everything of one logging step is packed into a
single tensor and reaches the host in one transfer.
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


def pack_rows(
    invs: list[Tensor], prevs: list[Tensor | None], moments: list[tuple[Tensor, Tensor | None]]
) -> Tensor:
    """Rows of all parameters and the shared log10 range, flattened into one float64 tensor.

    ``invs[i]`` is inverse_lr of parameter i now, ``prevs[i]`` at the step before (None: no
    Gamma), ``moments[i]`` its (v, vhat). Nothing here synchronises with the device.
    """
    device = invs[0].device
    inv_min = torch.stack([inv.min().to(device, torch.float64) for inv in invs])
    inv_max = torch.stack([inv.max().to(device, torch.float64) for inv in invs])
    # log10 of the effective step: lo from the largest inverse_lr, hi from the smallest
    lo = (-torch.log10(inv_max.max())).clamp(-_LOG10_CLAMP, _LOG10_CLAMP)
    hi = (-torch.log10(inv_min.min())).clamp(-_LOG10_CLAMP, _LOG10_CLAMP)
    scale = BINS / (hi - lo).clamp_min(1e-12)
    rows = []
    for inv, prev, (v, vhat), lo_i, hi_i in zip(
        invs, prevs, moments, inv_min, inv_max, strict=True
    ):
        rows.append(_row(inv, prev, v, vhat, lo_i, hi_i, lo, scale))
    return torch.cat([torch.stack(rows).flatten(), torch.stack([lo, hi])])


def _row(inv, prev, v, vhat, inv_min, inv_max, lo, scale) -> Tensor:
    f64 = torch.float64
    dev = inv_min.device
    n = torch.tensor(float(inv.numel()), dtype=f64, device=dev)
    zero = torch.zeros((), dtype=f64, device=dev)
    if prev is None:
        gamma = [zero, zero, torch.full_like(zero, _EMPTY["gamma_min"])]
    else:
        delta = inv - prev
        gamma = [n, (delta < 0).sum().to(dev, f64), delta.min().to(dev, f64)]
    if vhat is None:
        moment = [zero, zero, torch.full_like(zero, _EMPTY["vhat_max"]), zero]
    else:
        moment = [
            n,
            (vhat > v).sum().to(dev, f64),
            vhat.max().to(dev, f64),
            vhat.sum(dtype=f64).to(dev),
        ]
    work = inv.flatten() if inv.element_size() >= 4 else inv.flatten().float()  # half: overflow
    log_eff = torch.log10(work).neg_().clamp_(-_LOG10_CLAMP, _LOG10_CLAMP)
    lo, scale = lo.to(log_eff.device, log_eff.dtype), scale.to(log_eff.device, log_eff.dtype)
    bins = log_eff.sub_(lo).mul_(scale).floor_().clamp_(0, BINS - 1).long()
    hist = torch.bincount(bins, minlength=BINS).to(dev, f64)
    return torch.cat([torch.stack([n, inv_min, inv_max, *gamma, *moment]), hist])


def unpack_rows(packed: np.ndarray, n_params: int) -> tuple[np.ndarray, float, float]:
    """(rows [n_params, HIST + BINS], lo, hi) from ``pack_rows`` after its one transfer."""
    rows = packed[:-2].reshape(n_params, HIST + BINS)
    return rows, float(packed[-2]), float(packed[-1])


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
    """Median of log10 values, linearly interpolated inside its bin: exact to one bin width."""
    half = counts.sum() / 2.0
    cum = np.cumsum(counts)
    k = int(np.searchsorted(cum, half))
    before = cum[k - 1] if k > 0 else 0.0
    frac = (half - before) / counts[k] if counts[k] > 0 else 0.0
    return float(edges[k] + frac * (edges[k + 1] - edges[k]))


def row_metrics(row: np.ndarray, edges: np.ndarray, prefix: str, suffix: str) -> dict[str, float]:
    """DESIGN.md's keys for one row; Gamma and vhat keys only when the row has them."""

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
