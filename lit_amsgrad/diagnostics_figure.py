"""Draws what the diagnostics show on the paper's counterexample: docs/diagnostics_synthetic.{png,pdf}.

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
from lit_amsgrad import figure_style
from lit_amsgrad.optim import Adam, AMSGrad

PERIOD = 101
BIG, SMALL = 1010.0, -10.0  # f_t(x) = BIG x if t mod PERIOD == 1 else SMALL x
#: the minimiser of the sum of one period's losses on [-1, 1]
OPTIMUM = -1.0 if BIG + (PERIOD - 1) * SMALL > 0 else 1.0
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
#: each run's optimizer and how it is drawn: the paper's two in their registry style
#: (``figure_style.optimizer_style``), torch's in styles of their own
RUNS = {
    "Adam (paper mode)": _paper(Adam),
    "AMSGrad (paper mode)": _paper(AMSGrad),
    "torch Adam(amsgrad=True)": _torch_amsgrad,
    f"torch Adam(amsgrad=True), constant alpha={CONSTANT_LR}": _torch_amsgrad_constant,
}


PAPER_MODE = ("Adam (paper mode)", "AMSGrad (paper mode)")


def styles() -> dict[str, dict]:
    """``plot`` keyword arguments of each run in ``RUNS``: label, colour, line style, marker."""
    adam, amsgrad = (figure_style.optimizer_style(n) for n in ("adam", "amsgrad"))
    torch_style = {"markersize": 4}
    drawn = {
        "Adam (paper mode)": {**adam, "label": f"{adam['label']} (paper mode)"},
        "AMSGrad (paper mode)": {**amsgrad, "label": f"{amsgrad['label']} (paper mode)"},
        "torch Adam(amsgrad=True)": {
            **torch_style, "label": r"torch Adam(amsgrad=True), $\alpha_t = 0.5/\sqrt{t}$",
            "color": "tab:orange", "ls": "-.", "marker": "v",
        },
        f"torch Adam(amsgrad=True), constant alpha={CONSTANT_LR}": {
            **torch_style, "label": f"torch Adam(amsgrad=True), constant $\\alpha = {CONSTANT_LR}$",
            "color": "tab:gray", "ls": (0, (1, 1.5)), "marker": "x",
        },
    }  # fmt: skip
    return drawn


def log_markers(steps: int, index: int, count: int, per_decade: int = 4) -> list[int]:
    """Marker positions evenly spaced in log t (the x axis), ``per_decade`` to a decade,
    shifted by ``index / count`` of a spacing so that the markers of coinciding curves
    interleave; evenly along the drawn line instead would crowd where x_t oscillates."""
    decades = math.log10(max(steps, 1))
    exponents = np.arange((index / count) / per_decade, decades, 1 / per_decade)
    return sorted({min(int(10**e) - 1, steps - 1) for e in exponents})


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
        flush_every_s=1.0,  # read in batches; detach below reads the rest
    ).attach()
    xs = []
    for t in range(1, periods * PERIOD + 1):
        x.grad = torch.full_like(x, BIG if t % PERIOD == 1 else SMALL)
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


def title(results: dict[str, dict[str, np.ndarray]]) -> str:
    """The figure's title: the problem (its definition), then what the runs show, written
    from the series: where the paper-mode Adam and AMSGrad ended, and on what share of
    steps their effective step grew (Gamma_t < 0)."""
    steps = max(len(series["x"]) for series in results.values())
    lines = [
        rf"Online counterexample $f_t(x) = {BIG:g}x$ if $t \ \mathrm{{mod}}\ {PERIOD} = 1$, else ${SMALL:g}x$, "
        rf"on $[-1, 1]$; $\beta = {BETAS}$, $\alpha_t = {LR}/\sqrt{{t}}$; $T$ = {steps:,} steps"
    ]
    ends, grew = [], []
    for name, style in styles().items():
        if name not in results or name not in PAPER_MODE:
            continue
        series = results[name]
        label = style["label"].removesuffix(" (paper mode)")
        ends.append(f"{label} ends at $x_T$ = {series['x'][-1]:+.2f}" if not ends
                    else f"{label} at {series['x'][-1]:+.2f}")  # fmt: skip
        share = np.nanmean(series["diag/gamma_neg_frac"])
        grew.append(f"{label} {share:.0%}")
    if ends:
        lines.append(
            f"{', '.join(ends)} (optimum ${OPTIMUM:+.0f}$); steps with $\\Gamma_t < 0$: {', '.join(grew)}"
        )
    return "\n".join(lines)


def draw(results: dict[str, dict[str, np.ndarray]], out: Path) -> list[Path]:
    """``out/diagnostics_synthetic.png`` and ``.pdf``: x_t, the share of recent steps with
    Gamma_t < 0 and with v_hat_t > v_t, against t; returns both paths."""
    plt = figure_style.pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    all_styles = styles()
    for i, (name, series) in enumerate(results.items()):
        t = np.arange(1, len(series["x"]) + 1)
        style = {
            **all_styles.get(name, {"label": name}),
            "markevery": log_markers(len(t), i, len(results)),
        }
        axes[0].plot(t, series["x"], **{**style, "lw": 1.0})
        axes[1].plot(t, trailing_mean(series["diag/gamma_neg_frac"]), **style)
        active = trailing_mean(series["diag/vhat_active_frac"])
        if not np.all(np.isnan(active)):
            axes[2].plot(t, active, **style)
        elif name in PAPER_MODE:
            axes[2].text(0.55, 0.3, rf"{style['label']}: keeps no running max $\hat v_t$",
                         transform=axes[2].transAxes, fontsize=8, color=style.get("color"))  # fmt: skip
    axes[0].axhline(
        OPTIMUM, color="black", lw=0.8, ls=(0, (1, 3)), label=f"optimum $x^* = {OPTIMUM:+.0f}$"
    )
    axes[0].set_ylabel("iterate $x_t$")
    axes[0].set_ylim(-1.05, 1.05)
    axes[1].set_ylabel("share of steps with $\\Gamma_t < 0$\n(the step grew; last 101 steps)")
    axes[2].set_ylabel("share of steps with $\\hat v_t > v_t$\n(last 101 steps)")
    axes[2].set_xlabel("optimizer step $t$ (log scale)")
    for ax in axes:
        ax.set_xscale("log")
    axes[1].set_ylim(-0.05, 1.05)
    axes[2].set_ylim(-0.05, 1.05)
    axes[0].legend(loc="upper left", fontsize=7)
    fig.suptitle(title(results), fontsize=8)
    fig.tight_layout()
    return figure_style.save_figure(fig, out / "diagnostics_synthetic")


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
    print("wrote " + " and ".join(str(p) for p in draw(results, args.out)))
    return results


if __name__ == "__main__":
    main()
