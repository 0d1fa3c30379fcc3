"""Draws what the diagnostics show on the paper's counterexample: docs/diagnostics_synthetic.png.

    python -m lit_amsgrad.diagnostics_figure --out docs/

The 1-D online problem of Fig. 1 (f_t(x) = 1010x if t mod 101 == 1 else -10x on [-1, 1],
beta = (0.9, 0.99), alpha_t = 0.5 / sqrt(t)) for Adam and AMSGrad in the paper's mode and for
``torch.optim.Adam(amsgrad=True)``, in a plain loop with the callback's own probe logging every
step. With one coordinate a fraction is 0 or 1 at each step, so the figure shows its mean over
the last 101 steps (one period): the share of recent steps whose effective step size grew. A fourth run,
torch's AMSGrad at a constant alpha, shows what alpha_t = alpha/sqrt(t) hides: torch's max over
the raw v, debiased afterwards, lets the effective step grow for about 1,600 steps.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from callbacks import OptimizerProbe, moment_view
from lit_amsgrad.optim import Adam, AMSGrad

PERIOD = 101
LR, BETAS = 0.5, (0.9, 0.99)


def _paper(cls):
    def make(x):
        opt = cls([x], lr=LR, betas=BETAS, lr_schedule="inv_sqrt", bounds=(-1.0, 1.0))
        return opt, None

    return make


def _torch_amsgrad(x):
    opt = torch.optim.Adam([x], lr=LR, betas=BETAS, amsgrad=True)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / math.sqrt(s + 1))


def _torch_amsgrad_constant(x):
    return torch.optim.Adam([x], lr=CONSTANT_LR, betas=BETAS, amsgrad=True), None


CONSTANT_LR = 0.05
RUNS = {
    "Adam (paper mode)": _paper(Adam),
    "AMSGrad (paper mode)": _paper(AMSGrad),
    "torch Adam(amsgrad=True)": _torch_amsgrad,
    f"torch Adam(amsgrad=True), constant alpha={CONSTANT_LR}": _torch_amsgrad_constant,
}


def run(make, periods: int) -> dict[str, np.ndarray]:
    """x_t and the per-step diagnostics of one optimizer on the online counterexample."""
    x = nn.Parameter(torch.zeros(1))
    opt, sched = make(x)
    logged: dict[int, dict[str, float]] = {}
    probe = OptimizerProbe(
        opt,
        moment_view(opt),
        {id(x): "x"},
        on_metrics=lambda m, s: logged.__setitem__(s, m),
        log_every_n_steps=1,
        per_parameter=False,
    ).attach()
    xs = []
    for t in range(1, periods * PERIOD + 1):
        x.grad = torch.full_like(x, 1010.0 if t % PERIOD == 1 else -10.0)
        opt.step()
        if isinstance(opt, torch.optim.Adam):  # torch has no projection: clamp onto F by hand
            with torch.no_grad():
                x.clamp_(-1.0, 1.0)
        if sched is not None:
            sched.step()
        xs.append(x.item())
    probe.detach()
    steps = sorted(logged)
    series = {"x": np.array(xs)}
    for key in ("diag/gamma_neg_frac", "diag/vhat_active_frac", "diag/eff_lr/max"):
        series[key] = np.array([logged[s].get(key, np.nan) for s in steps])
    return series


def trailing_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last 101 steps (one period; fewer at the start), skipping unlogged steps."""
    seen = ~np.isnan(values)
    total = np.concatenate([[0.0], np.cumsum(np.where(seen, values, 0.0))])
    count = np.concatenate([[0], np.cumsum(seen)])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(end - PERIOD, 0)
    n = count[end] - count[start]
    return np.where(n > 0, (total[end] - total[start]) / np.maximum(n, 1), np.nan)


def draw(results: dict[str, dict[str, np.ndarray]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    styles = [("C3", "-", 1.5), ("C0", "-", 3.0), ("C2", "--", 1.5), ("C1", ":", 2.0)]
    for (name, series), (color, ls, lw) in zip(results.items(), styles, strict=True):
        t = np.arange(1, len(series["x"]) + 1)
        axes[0].plot(t, series["x"], color=color, label=name, lw=0.7)
        gamma = trailing_mean(series["diag/gamma_neg_frac"])
        axes[1].plot(t, gamma, color=color, ls=ls, lw=lw, label=name)
        active = trailing_mean(series["diag/vhat_active_frac"])
        if not np.all(np.isnan(active)):
            axes[2].plot(t, active, color=color, ls=ls, lw=lw, label=name)
    axes[0].set_ylabel("x_t  (optimum: -1)")
    axes[0].set_ylim(-1.05, 1.05)
    axes[1].set_ylabel("diag/gamma_neg_frac\n(mean over last 101 steps)")
    axes[2].set_ylabel("diag/vhat_active_frac\n(mean over last 101 steps)")
    axes[2].set_xlabel("optimizer step t (log scale)")
    for ax in axes:
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[1].set_ylim(-0.05, 1.05)
    axes[2].set_ylim(-0.05, 1.05)
    axes[0].legend(loc="upper left", fontsize=8)
    axes[2].text(
        0.55,
        0.3,
        "Adam keeps no running max vhat",
        transform=axes[2].transAxes,
        fontsize=8,
        color="C3",
    )
    fig.suptitle(
        "Online counterexample f_t(x)=1010x if t mod 101 = 1 else -10x, "
        "beta=(0.9, 0.99), alpha_t=0.5/sqrt(t)",
        fontsize=9,
    )
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "diagnostics_synthetic.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Runs every optimizer, prints a summary, draws the figure; returns the series."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--periods", type=int, default=300, help="periods of 101 steps")
    args = parser.parse_args(argv)
    results = {name: run(make, args.periods) for name, make in RUNS.items()}
    for name, series in results.items():
        neg = np.nanmean(series["diag/gamma_neg_frac"])
        act = series["diag/vhat_active_frac"]
        act = np.mean(act) if not np.isnan(act).all() else float("nan")
        print(
            f"{name:46s} x_T={series['x'][-1]:+.3f} gamma<0 in {neg:.1%} of steps, "
            f"vhat active in {act:.1%}"
        )
    print(f"wrote {draw(results, args.out)}")
    return results


if __name__ == "__main__":
    main()
