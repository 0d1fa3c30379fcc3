"""Figure 1 of Reddi et al. (2018): the optimizers on the online and stochastic counterexample.

    python -m lit_amsgrad.reproduce figure1 --out DIR

Every run goes through the same code as ``train.py``: the config
``synthetic_<problem>_<optimizer>.yaml`` (the fragments ``configs/tasks/synthetic_<problem>.yaml``
and ``configs/optimizers/<optimizer>.yaml``) is parsed by the project's LightningCLI and
the resulting model, data and trainer are used as they are (only the number of rounds and
seeds can be overridden). Writes ``DIR/figure1.png`` (average regret and iterate against t,
as the paper's Figure 1) and ``DIR/figure1.json``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_amsgrad import registry
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
            color, label = registry.color(name), registry.label(name)
            axes[row, 0].plot(h["t"], h["avg_regret"], label=label, color=color)
            axes[row, 1].plot(h["t"], h["x"], label=label, color=color)
        axes[row, 0].set(title=f"{problem}: average regret R_t / t", xlabel="t", yscale="log")
        axes[row, 1].set(title=f"{problem}: iterate x_t", xlabel="t", ylim=(-1.05, 1.05))
        axes[row, 1].axhline(-1.0, color="black", lw=0.8, ls="--")
        axes[row, 0].legend()
    fig.suptitle("Figure 1 of Reddi et al. (2018): Adam goes to x = +1, AMSGrad to the optimum -1")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure1(
    out: Path,
    optimizers: Sequence[str] | None = None,
    online_rounds: int | None = None,
    stochastic_rounds: int | None = None,
    seeds: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every (problem, optimizer) pair, write figure1.png and figure1.json under ``out``.

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
    fig1.add_argument("--out", type=Path, required=True, help="folder for figure1.png/.json")
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
            print(
                f"{problem:10s} {name:9s} final x {r['final_x']:+.3f}  "
                f"tail mean x {r['tail_mean_x']:+.3f}  avg regret {r['avg_regret']:.4f}"
            )
    print(f"wrote {args.out / 'figure1.png'} and {args.out / 'figure1.json'}")
