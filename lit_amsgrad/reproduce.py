"""Rerun the paper's figures and draw them.

    python -m lit_amsgrad.reproduce figure1 --out DIR

Figure 1: Adam, AMSGrad, AdamNC and AdaShift on the online and the stochastic counterexample.
Every run goes through the same code as ``train.py``: the config
``configs/synthetic_<problem>_<optimizer>.yaml`` is parsed by the project's LightningCLI and
the resulting model, data and trainer are used as they are (only the number of rounds and
seeds can be overridden). Writes ``DIR/figure1.png`` (average regret and iterate against t,
as the paper's Figure 1) and ``DIR/figure1.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROBLEMS = ("online", "stochastic")
FIGURE1_OPTIMIZERS = ("adam", "amsgrad", "adamnc", "adashift")
COLORS = {"adam": "tab:red", "amsgrad": "tab:blue", "adamnc": "tab:green", "adashift": "tab:purple"}


def run_synthetic(problem: str, optimizer: str, rounds: int | None, seeds: int | None) -> Any:
    """Fit ``synthetic_<problem>_<optimizer>.yaml`` through the CLI; returns the fitted module."""
    from lit_amsgrad.cli import AMSGradCLI, resolve_config

    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # one progress display, not 8 banners
    # args are given on purpose: this process's own argv belongs to `reproduce`
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")

    args = [
        "--config", resolve_config(f"synthetic_{problem}_{optimizer}.yaml"),
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
    """Final iterate, iterate averaged over the last 10% of rounds, average regret."""
    history = module.history
    rounds = [h[0] for h in history]
    last = rounds[-1]
    tail = [h[1] for h in history if h[0] > 0.9 * last] or [history[-1][1]]
    return {
        "final_x": float(module.x.detach().mean()),
        "final_x_per_seed": [float(v) for v in module.x.detach()],
        "tail_mean_x": sum(tail) / len(tail),
        "avg_regret": history[-1][2],
        "rounds": last,
        "history": {
            "t": rounds,
            "x": [h[1] for h in history],
            "avg_regret": [h[2] for h in history],
        },
    }


def plot_figure1(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    for row, problem in enumerate(PROBLEMS):
        for name, result in results.get(problem, {}).items():
            h = result["history"]
            color = COLORS.get(name)
            axes[row, 0].plot(h["t"], h["avg_regret"], label=name, color=color)
            axes[row, 1].plot(h["t"], h["x"], label=name, color=color)
        axes[row, 0].set(title=f"{problem}: average regret R_t / t", xlabel="t", yscale="log")
        axes[row, 1].set(title=f"{problem}: iterate x_t", xlabel="t", ylim=(-1.05, 1.05))
        axes[row, 1].axhline(-1.0, color="black", lw=0.8, ls="--")
        axes[row, 0].legend()
    fig.suptitle("Figure 1 of Reddi et al. (2018): Adam goes to x = +1, AMSGrad to the optimum -1")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure1(
    out: Path,
    optimizers: Sequence[str] = FIGURE1_OPTIMIZERS,
    online_rounds: int | None = None,
    stochastic_rounds: int | None = None,
    seeds: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every (problem, optimizer) pair, write figure1.png and figure1.json under ``out``."""
    from rich.progress import Progress

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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit_amsgrad.reproduce", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fig1 = commands.add_parser("figure1", help="the synthetic counterexample (paper Fig. 1)")
    fig1.add_argument("--out", type=Path, required=True, help="folder for figure1.png/.json")
    fig1.add_argument(
        "--optimizers", nargs="+", default=list(FIGURE1_OPTIMIZERS), choices=FIGURE1_OPTIMIZERS
    )
    fig1.add_argument("--online-rounds", type=int, default=None, help="default: the config's")
    fig1.add_argument("--stochastic-rounds", type=int, default=None, help="default: the config's")
    fig1.add_argument("--seeds", type=int, default=None, help="independent runs (coordinates)")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    if args.command == "figure1":
        results = figure1(
            args.out, args.optimizers, args.online_rounds, args.stochastic_rounds, args.seeds
        )
        for problem, runs in results.items():
            for name, r in runs.items():
                print(
                    f"{problem:10s} {name:9s} final x {r['final_x']:+.3f}  "
                    f"tail mean x {r['tail_mean_x']:+.3f}  avg regret {r['avg_regret']:.4f}"
                )
        print(f"wrote {args.out / 'figure1.png'} and {args.out / 'figure1.json'}")


if __name__ == "__main__":
    main()
