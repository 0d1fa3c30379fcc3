"""Figure 1 of Reddi et al. (2018): the optimizers on the online and stochastic counterexample.

    python -m lit_amsgrad.reproduce figure1 --out DIR

Every run goes through the same code as ``train.py``: the config
``synthetic_<problem>_<optimizer>.yaml`` (the fragments ``configs/tasks/synthetic_<problem>.yaml``
and ``configs/optimizers/<optimizer>.yaml``) is parsed by the project's LightningCLI and
the resulting model, data and trainer are used as they are (only the number of rounds and
seeds can be overridden). Writes ``DIR/figure1.png`` and ``DIR/figure1.pdf`` (average regret,
the rate R_t/sqrt(t) and the iterate against t; the paper's Figure 1 has the first and the
last) and ``DIR/figure1.json`` (per problem and optimizer: where x ended, the regret, and
the log-log slope of R_T over the last decade of T).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_amsgrad import figure_style, registry
from lit_amsgrad.registry import FIGURE1, FIGURE1_TASKS
from lit_amsgrad.reproduce import config_args, quiet_lightning

COMMAND = "figure1"
PROBLEMS = tuple(FIGURE1_TASKS)


def run_synthetic(problem: str, optimizer: str, rounds: int | None, seeds: int | None) -> Any:
    """Fit ``synthetic_<problem>_<optimizer>.yaml`` through the CLI; returns the fitted module."""
    from lit_amsgrad.cli import AMSGradCLI

    quiet_lightning()  # after the import: Lightning sets its loggers' levels on import
    args = [
        *config_args(f"{FIGURE1_TASKS[problem]}_{optimizer}.yaml"),
        "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    if rounds is not None:
        args.append(f"--data.init_args.num_rounds={rounds}")
    if seeds is not None:
        args.append(f"--model.init_args.num_seeds={seeds}")
    cli = AMSGradCLI(args=args, run=False, save_config_callback=None, run_name="reproduce")
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli.model


def summarize(module: Any) -> dict[str, Any]:
    """Final iterate, iterate averaged over the last 10% of rounds, average regret, the
    optimum, and the rate of the regret: R_T / sqrt(T) and R_T's log-log slope over the
    last decade of T (``regret_slope``)."""
    history = module.history
    rounds = [h[0] for h in history]
    last = rounds[-1]
    tail = [h[1] for h in history if h[0] > 0.9 * last] or [history[-1][1]]
    regret = [h[0] * h[2] for h in history]  # R_t, the mean over seeds: t * (mean R_t / t)
    return {
        "final_x": float(module.x.detach().mean()),
        "final_x_per_seed": [float(v) for v in module.x.detach()],
        "tail_mean_x": sum(tail) / len(tail),
        "optimum": -1.0 if module.expected_coefficient() > 0 else 1.0,
        "avg_regret": history[-1][2],
        "regret": regret[-1],
        "regret_over_sqrt_t": regret[-1] / math.sqrt(last),
        **regret_slope(rounds, regret),
        "rounds": last,
        "history": {
            "t": rounds,
            "x": [h[1] for h in history],
            "avg_regret": [h[2] for h in history],
        },
    }


def regret_slope(t: Sequence[float], regret: Sequence[float]) -> dict[str, Any]:
    """The log-log slope of R_T against T over the last decade, T in [T_max / 10, T_max]:
    the least-squares line through (log T, log R_T) there. R_T = O(sqrt(T)) (AMSGrad's
    bound) reads as a slope <= 0.5, a regret linear in T (Adam on the counterexample) as 1.

    Returns ``regret_slope`` (None where it cannot be fitted), ``regret_slope_reason`` (why
    not, else None), ``regret_slope_window`` (the first and last T fitted on) and
    ``regret_slope_points``. Not fitted: fewer than 2 rounds in the window, or R_T <= 0 at
    one of them (no logarithm; a regret that is not positive has no power-law rate)."""
    if len(t) == 0:
        return _slope(None, "no rounds played", [], 0)
    t_max = max(t)
    window = [(ti, ri) for ti, ri in zip(t, regret, strict=True) if ti >= t_max / 10]
    span = [window[0][0], window[-1][0]] if window else []
    if len(window) < 2:
        return _slope(None, "fewer than 2 rounds in [T_max/10, T_max]", span, len(window))
    if any(ri <= 0 for _, ri in window):
        bad = next(ti for ti, ri in window if ri <= 0)
        return _slope(None, f"R_T <= 0 at T = {bad:g} in [T_max/10, T_max]", span, len(window))
    xs = [math.log(ti) for ti, _ in window]
    ys = [math.log(ri) for _, ri in window]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return _slope(slope, None, span, len(window))


def _slope(slope: float | None, reason: str | None, span: list, points: int) -> dict[str, Any]:
    return {
        "regret_slope": slope,
        "regret_slope_reason": reason,
        "regret_slope_window": span,
        "regret_slope_points": points,
    }


def title(results: dict[str, dict[str, Any]]) -> str:
    """The figure's title, written from the results: where each optimizer's iterate ended on
    each problem, against the optimum (no conclusion that the numbers do not show)."""
    lines = ["Reddi et al. (2018), Figure 1"]
    for problem in PROBLEMS:
        runs = results.get(problem, {})
        if not runs:
            continue
        ends = [
            f"{registry.label(name)} {'ends at $x_T$ = ' if i == 0 else 'at '}{r['final_x']:+.2f}"
            for i, (name, r) in enumerate(runs.items())
        ]
        optima = {r["optimum"] for r in runs.values() if "optimum" in r}
        optimum = f" (optimum {optima.pop():+.0f})" if len(optima) == 1 else ""
        rounds = max(r["rounds"] for r in runs.values())
        seeds = max(len(r.get("final_x_per_seed", [0])) for r in runs.values())
        mean = f", mean of {seeds} runs" if seeds > 1 else ""
        lines.append(f"{problem}, $T$ = {rounds:,}{mean}: {', '.join(ends)}{optimum}")
    return "\n".join(lines)


def _set_yscale(ax: Any, values: Sequence[float]) -> None:
    """Log where every value is > 0, else symmetric log with a linear part around 0 sized
    from the data, so that no curve leaves the axis."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0:
        ax.set_yscale("log")
    elif finite:
        nonzero = [abs(v) for v in finite if v != 0]
        ax.set_yscale("symlog", linthresh=max(min(nonzero), 1e-6) if nonzero else 1.0)


def markers(t: Sequence[float], index: int, count: int, log_t: bool, n: int = 10) -> list[int]:
    """Indices of about ``n`` markers evenly spaced in t (or in log t), the curve ``index`` of
    ``count`` shifted by ``index / count`` of a spacing, so that the markers of curves lying
    on top of each other interleave (spaced along the drawn line instead, they crowd where
    a curve is noisy)."""
    if not t:
        return []
    lo, hi = (math.log(t[0]), math.log(t[-1])) if log_t else (t[0], t[-1])
    if hi <= lo:
        return [0]
    spacing = (hi - lo) / n
    targets = [lo + (k + index / count) * spacing for k in range(n + 1)]
    where = [math.log(v) for v in t] if log_t else list(t)
    chosen = {min(range(len(t)), key=lambda j: abs(where[j] - v)) for v in targets if v <= hi}
    return sorted(chosen)


def plot_figure1(results: dict[str, dict[str, Any]], path: Path) -> list[Path]:
    """Per problem (rows): average regret R_t/t, R_t/sqrt(t) (the rate), the iterate x_t.
    Writes ``path`` (PNG) and the PDF beside it; returns both paths."""
    plt = figure_style.pyplot()
    fig, axes = plt.subplots(len(PROBLEMS), 3, figsize=(13, 7.5), constrained_layout=True)
    for row, problem in enumerate(PROBLEMS):
        runs = results.get(problem, {})
        avg, rate = [], []
        for i, (name, result) in enumerate(runs.items()):
            h = result["history"]
            style = figure_style.optimizer_style(name)
            r_over_t = h["avg_regret"]
            r_over_sqrt_t = [ti * v / math.sqrt(ti) for ti, v in zip(h["t"], r_over_t, strict=True)]
            slope = result.get("regret_slope")
            rate_label = f"{style['label']}: " + (
                f"slope {slope:.2f}" if slope is not None else "no slope ($R_T \\leq 0$)"
            )
            linear, log = (markers(h["t"], i, len(runs), log_t) for log_t in (False, True))
            axes[row, 0].plot(h["t"], r_over_t, **{**style, "markevery": linear})
            axes[row, 1].plot(
                h["t"], r_over_sqrt_t, **{**style, "label": rate_label, "markevery": log}
            )
            axes[row, 2].plot(h["t"], h["x"], **{**style, "markevery": linear})
            avg += r_over_t
            rate += r_over_sqrt_t
        _set_yscale(axes[row, 0], avg)
        axes[row, 0].set(xlabel="round $t$", ylabel=r"average regret $R_t / t$",
                         title=f"{problem}: average regret")  # fmt: skip
        axes[row, 1].set(xscale="log", xlabel="round $t$", ylabel=r"$R_t / \sqrt{t}$",
                         title=f"{problem}: rate; slope of $\\log R_t$ on $\\log t$, $t \\geq T/10$")  # fmt: skip
        axes[row, 1].axhline(0.0, color="black", lw=0.6)
        axes[row, 2].set(xlabel="round $t$", ylabel="iterate $x_t$", ylim=(-1.05, 1.05),
                         title=f"{problem}: iterate")  # fmt: skip
        optima = {r["optimum"] for r in runs.values() if "optimum" in r}
        for optimum in optima:
            axes[row, 2].axhline(optimum, color="black", lw=0.8, ls=(0, (1, 3)),
                                 label=f"optimum $x^* = {optimum:+.0f}$")  # fmt: skip
        for ax in axes[row, 1:]:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best")
    fig.suptitle(title(results), fontsize=9)
    return figure_style.save_figure(fig, Path(path).with_suffix(""))


def figure1(
    out: Path,
    optimizers: Sequence[str] | None = None,
    online_rounds: int | None = None,
    stochastic_rounds: int | None = None,
    seeds: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every (problem, optimizer) pair, write figure1.{png,pdf,json} under ``out``.

    ``optimizers``: registry names, by default those the registry puts in Figure 1."""
    from rich.progress import Progress

    optimizers = registry.optimizers(FIGURE1) if optimizers is None else optimizers
    out.mkdir(parents=True, exist_ok=True)
    rounds = {"online": online_rounds, "stochastic": stochastic_rounds}
    results: dict[str, dict[str, Any]] = {problem: {} for problem in PROBLEMS}
    with Progress() as progress:
        task = progress.add_task("figure 1", total=len(PROBLEMS) * len(optimizers))
        for problem in PROBLEMS:
            for name in optimizers:
                progress.update(task, description=f"{problem} / {name}")
                module = run_synthetic(problem, name, rounds[problem], seeds)
                results[problem][name] = summarize(module)
                progress.advance(task)
    plot_figure1(results, out / "figure1.png")
    summary = {
        problem: {name: {k: v for k, v in r.items() if k != "history"} for name, r in runs.items()}
        for problem, runs in results.items()
    }
    (out / "figure1.json").write_text(json.dumps(summary, indent=2))
    return results


def add_parser(commands: Any) -> None:
    fig1 = commands.add_parser("figure1", help="the synthetic counterexample (paper Fig. 1)")
    fig1.add_argument("--out", type=Path, required=True, help="folder for figure1.png/.pdf/.json")
    names = registry.optimizers(FIGURE1)
    fig1.add_argument("--optimizers", nargs="+", default=list(names), choices=names)
    fig1.add_argument("--online-rounds", type=int, default=None, help="default: the config's")
    fig1.add_argument("--stochastic-rounds", type=int, default=None, help="default: the config's")
    fig1.add_argument("--seeds", type=int, default=None, help="independent runs (coordinates)")


def run(args: argparse.Namespace) -> None:
    results = figure1(
        args.out, args.optimizers, args.online_rounds, args.stochastic_rounds, args.seeds
    )
    for problem, runs in results.items():
        for name, r in runs.items():
            slope = r["regret_slope"]
            print(
                f"{problem:10s} {name:9s} final x {r['final_x']:+.3f}  "
                f"tail mean x {r['tail_mean_x']:+.3f}  avg regret {r['avg_regret']:.4f}  "
                f"R_T/sqrt(T) {r['regret_over_sqrt_t']:.3f}  slope of log R_T "
                + (f"{slope:.3f}" if slope is not None else f"none ({r['regret_slope_reason']})")
            )
    print(f"wrote figure1.png, figure1.pdf and figure1.json in {args.out}")
