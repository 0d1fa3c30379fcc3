"""Figure 2 of Reddi et al. (2018): Adam and AMSGrad on an image task over a grid of beta_2 and alpha.

    python -m lit_amsgrad.reproduce figure2 --task mnist_logreg --out DIR [--seeds 5]

Every grid point is ``<task>_<optimizer>.yaml`` (the task's and the optimizer's fragments)
through the same CLI as ``train.py`` with overrides of alpha and beta_2 (beta_1 is the
config's), logged to CSV and W&B (offline by default). Writes ``DIR/figure2_<task>.png``,
``.pdf`` and ``.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lit_amsgrad import registry
from lit_amsgrad.registry import FIGURE2, FIGURE2_TASKS
from lit_amsgrad.reproduce import config_args, quiet_lightning

COMMAND = "figure2"

TASKS = FIGURE2_TASKS  # the image tasks (lit_amsgrad.registry)
PAPER_BETA2S = (0.99, 0.999)
DEFAULT_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
DIAG_KEYS = ("diag/gamma_neg_frac", "diag/vhat_active_frac")
SELECTION = "lowest final held-out (validation split) loss"
DEFAULT_LOGGER = "lit_amsgrad.loggers.RunWandbLogger"
BEST_KEYS = ("name", "beta2", "lr", "final_val_loss", "final_val_acc", "final_train_loss", "steps",
             "curves")  # fmt: skip


@dataclass(frozen=True)
class GridPoint:
    """One setting of the grid: which optimizer's config, run with which beta_2 and alpha."""

    optimizer: str
    beta2: float
    lr: float

    @property
    def name(self) -> str:
        return f"{self.optimizer}_beta2={self.beta2:g}_lr={self.lr:g}"


@dataclass(frozen=True)
class Figure2Run:
    """What every grid point shares: length, evaluation cadence, data (None: the config's)."""

    max_steps: int | None = None
    epochs: int | None = None
    eval_every: int = 50
    log_every: int = 10
    diag_every: int | None = None
    data_dir: str | None = None
    train_size: int | None = None
    val_size: int | None = None
    num_workers: int | None = None
    wandb: str = "offline"


def grid(
    optimizers: Sequence[str], beta2s: Sequence[float], lrs: Sequence[float]
) -> list[GridPoint]:
    """Every (optimizer, beta_2, alpha), in the order they run."""
    return [GridPoint(o, b, lr) for o in optimizers for b in beta2s for lr in lrs]


def figure2_args(task: str, point: GridPoint, run: Figure2Run, run_dir: Path) -> list[str]:
    """One grid point as train.py's arguments: the task's config plus overrides (alpha and
    beta_2; beta_1 stays the config's)."""
    config = f"{task}_{point.optimizer}.yaml"
    optimizer = "--model.init_args.optimizer.init_args"
    beta1 = config_beta1(config)
    args = [
        *config_args(config),
        f"{optimizer}.lr={point.lr}", f"{optimizer}.betas=[{beta1}, {point.beta2}]",
        f"--trainer.default_root_dir={run_dir}",
        # validate every eval_every optimizer steps, across epoch boundaries
        "--trainer.check_val_every_n_epoch=null", f"--trainer.val_check_interval={run.eval_every}",
        f"--trainer.log_every_n_steps={run.log_every}",
        f"--trainer.logger={json.dumps(_loggers(task, point, run, run_dir))}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    if run.max_steps is not None:
        args += [f"--trainer.max_steps={run.max_steps}", "--trainer.max_epochs=-1"]
    elif run.epochs is not None:
        args.append(f"--trainer.max_epochs={run.epochs}")
    for key in ("data_dir", "train_size", "val_size", "num_workers"):
        if getattr(run, key) is not None:
            args.append(f"--data.init_args.{key}={getattr(run, key)}")
    return args


def config_beta1(config: str) -> float:
    """beta_1 of ``config``'s optimizer: its ``betas[0]``, else the class's default."""
    import importlib
    import inspect

    from lit_amsgrad.cli import load_config

    spec = load_config(config)["model"]["init_args"]["optimizer"]
    betas = spec.get("init_args", {}).get("betas")
    if betas is None:
        module, name = spec["class_path"].rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        betas = inspect.signature(cls).parameters["betas"].default
    return float(betas[0])


def _loggers(task: str, point: GridPoint, run: Figure2Run, run_dir: Path) -> list[dict[str, Any]]:
    """CSV always (the figure is drawn from it), W&B unless ``run.wandb == "off"``."""
    csv_logger = {"save_dir": str(run_dir), "name": "csv", "version": ""}
    loggers = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": csv_logger}]
    if run.wandb != "off":
        wandb_logger = {
            "save_dir": str(run_dir),
            "name": f"{task}/{point.name}",
            "group": f"figure2_{task}",  # the W&B report of lit_amsgrad.dashboard reads it
            "job_type": "figure2",
            "tags": ["figure2", task, f"beta2={point.beta2:g}", f"lr={point.lr:g}"],
            "offline": run.wandb == "offline",
        }
        loggers.append({"class_path": DEFAULT_LOGGER, "init_args": wandb_logger})
    return loggers


def fit_grid_point(
    args: list[str], run: Figure2Run, extra_callbacks: Sequence[Any] = ()
) -> tuple[Any, dict[str, float]]:
    """Fit one grid point through the project's CLI; returns the CLI (its trainer and model)
    and the final held-out loss and accuracy."""
    from lit_amsgrad.cli import AMSGradCLI, _finish_wandb

    quiet_lightning()
    cli = AMSGradCLI(args=args, run=False, save_config_callback=None, run_name="reproduce")
    diagnostics = [c for c in cli.trainer.callbacks if type(c).__name__ == "OptimizerDiagnostics"]
    if not diagnostics:
        raise ValueError("figure2 draws diag/ keys: the config must enable OptimizerDiagnostics")
    if run.diag_every is not None:
        for callback in diagnostics:  # read when training starts
            callback.log_every_n_steps = run.diag_every
    cli.trainer.callbacks.extend(extra_callbacks)
    try:
        cli.trainer.fit(cli.model, cli.datamodule)
        final = _final_validation(cli, run.eval_every)
    finally:
        _finish_wandb()  # one W&B run per grid point
    return cli, final


def _final_validation(cli: Any, eval_every: int) -> dict[str, float]:
    """Held-out loss and accuracy after the last step: evaluated again unless the schedule
    just did."""
    metrics = cli.trainer.callback_metrics
    if "val/loss" not in metrics or cli.trainer.global_step % eval_every != 0:
        (metrics,) = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)
    return {"loss": float(metrics["val/loss"]), "acc": float(metrics["val/acc"])}


def read_curves(csv_path: Path) -> dict[str, list[tuple[int, float]]]:
    """{key: [(iteration, value), ...]} from a CSVLogger's metrics.csv.

    Lightning logs train/val metrics at the 0-based index of the step, the diagnostics at
    the optimizer's own count; both become iteration t = updates done so far.
    """
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            for key, value in row.items():
                if key in ("step", "epoch") or not value:
                    continue
                iteration = step if key.startswith("diag") else step + 1
                curves.setdefault(key, []).append((iteration, float(value)))
    return curves


def summarize_point(point: GridPoint, cli: Any, final: dict[str, float]) -> dict[str, Any]:
    """Final losses of one grid point and the curves the figure needs."""
    csv_path = Path(cli.trainer.default_root_dir) / "csv" / "metrics.csv"
    curves = read_curves(csv_path)
    steps = cli.trainer.global_step
    val = [p for p in curves.get("val/loss", []) if p[0] < steps]
    curves["val/loss"] = [*val, (steps, final["loss"])]  # the last point is the final one
    train = curves.get("train/loss", [])
    tail = [v for s, v in train if s > 0.9 * steps] or [v for _, v in train[-1:]]
    keep = ("train/loss", "val/loss", *DIAG_KEYS)
    return {
        **asdict(point),
        "name": point.name,
        "steps": steps,
        "final_val_loss": final["loss"],
        "final_val_acc": final["acc"],
        "final_train_loss": sum(tail) / len(tail) if tail else float("nan"),
        "curves": {k: [list(p) for p in curves[k]] for k in keep if k in curves},
        "metrics_csv": str(csv_path),
    }


def best_points(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per optimizer, the grid point with the lowest final held-out loss (NaN is worst)."""
    best: dict[str, dict[str, Any]] = {}
    for result in results:
        current = best.get(result["optimizer"])
        if current is None or _finite(result["final_val_loss"]) < _finite(
            current["final_val_loss"]
        ):
            best[result["optimizer"]] = result
    return best


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def _smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average: the logged train losses are single batches, hence noisy."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_figure2(summary: dict[str, Any], path: Path) -> None:
    """Train and held-out loss of each optimizer's best setting, its diagnostics, the grid.

    Drawn from the JSON summary alone, so a figure can be redrawn without training again.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    (ax_train, ax_val), (ax_diag, ax_grid) = axes
    for optimizer, result in summary["best"].items():
        _plot_best(ax_train, ax_val, ax_diag, optimizer, result)
    _plot_grid(ax_grid, summary["grid"])
    ax_train.set(title="train loss (batch loss, mean of the last 10 logs)")
    ax_val.set(title="test loss: held-out split, evaluated every few steps")
    ax_diag.set(
        title="solid: fraction with Gamma_t < 0; dashed: fraction with v_hat > v",
        ylim=(-0.03, 1.03),
    )
    for ax in (ax_train, ax_val, ax_diag):
        ax.set_xlabel("iteration")
    ax_grid.set(title="final held-out loss of every grid point", xlabel="alpha", xscale="log")
    ax_grid.set_yscale("log")
    ax_grid.set_xticks(sorted({r["lr"] for r in summary["grid"]}))
    ax_grid.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax_grid.xaxis.set_minor_formatter(NullFormatter())
    ax_grid.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax_grid.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
    for ax in axes.flat:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    names = " vs ".join(registry.label(o) for o in summary["best"])
    fig.suptitle(f"{summary['task']}: {names} at the setting with the {SELECTION}")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_best(ax_train: Any, ax_val: Any, ax_diag: Any, optimizer: str, result: dict) -> None:
    curves, color, name = result["curves"], registry.color(optimizer), registry.label(optimizer)
    label = f"{name} (beta2={result['beta2']:g}, alpha={result['lr']:g})"
    if curves.get("train/loss"):
        steps, values = zip(*curves["train/loss"], strict=True)
        ax_train.plot(steps, _smooth(values, 10), color=color, label=label)
    steps, values = zip(*curves["val/loss"], strict=True)
    ax_val.plot(steps, values, color=color, marker=".", label=label)
    for key, style in zip(DIAG_KEYS, ("-", "--"), strict=True):
        if curves.get(key):
            steps, values = zip(*curves[key], strict=True)
            ax_diag.plot(steps, values, color=color, ls=style, label=f"{name} {key}")


def _plot_grid(ax: Any, results: Sequence[dict[str, Any]]) -> None:
    for optimizer, beta2 in sorted({(r["optimizer"], r["beta2"]) for r in results}):
        line = sorted((r["lr"], r["final_val_loss"]) for r in results
                      if (r["optimizer"], r["beta2"]) == (optimizer, beta2))  # fmt: skip
        lrs, losses = zip(*line, strict=True)
        style = "-" if beta2 == max(r["beta2"] for r in results) else ":"
        ax.plot(lrs, losses, ls=style, marker="o", color=registry.color(optimizer),
                label=f"{registry.label(optimizer)} beta2={beta2:g}")  # fmt: skip


def _step_progress(progress: Any, task: Any) -> Any:
    """A Lightning callback that moves a rich progress task with the optimizer steps."""
    from lightning.pytorch.callbacks import Callback

    class StepProgress(Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            progress.reset(task, total=trainer.estimated_stepping_batches)

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            progress.update(task, completed=trainer.global_step)

    return StepProgress()


def figure2(
    task: str,
    out: Path,
    optimizers: Sequence[str] | None = None,
    beta2s: Sequence[float] = PAPER_BETA2S,
    lrs: Sequence[float] = DEFAULT_LRS,
    run: Figure2Run = Figure2Run(),
) -> dict[str, Any]:
    """Run the grid of ``task``, write figure2_<task>.png/.json under ``out``; returns the JSON.

    ``optimizers``: registry names, by default those the registry puts in Figure 2."""
    from rich.progress import Progress

    optimizers = registry.optimizers(FIGURE2) if optimizers is None else optimizers
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    out.mkdir(parents=True, exist_ok=True)
    points = grid(optimizers, beta2s, lrs)
    results = []
    with Progress() as progress:
        overall = progress.add_task(f"figure 2 {task}", total=len(points))
        steps = progress.add_task("steps", total=None)
        for point in points:
            progress.update(overall, description=f"{task} {point.name}")
            run_dir = out / "runs" / task / point.name
            shutil.rmtree(run_dir / "csv", ignore_errors=True)  # a rerun must not read old rows
            args = figure2_args(task, point, run, run_dir)
            cli, final = fit_grid_point(args, run, [_step_progress(progress, steps)])
            results.append(summarize_point(point, cli, final))
            progress.advance(overall)
    summary = figure2_summary(task, results, run)
    plot_figure2(summary, out / f"figure2_{task}.png")
    (out / f"figure2_{task}.json").write_text(json.dumps(summary, indent=2))
    return summary


def figure2_summary(task: str, results: Sequence[dict[str, Any]], run: Figure2Run) -> dict:
    """The JSON: the best setting and its curves per optimizer, every grid point's result."""
    best = best_points(results)
    return {
        "task": task,
        "selection": SELECTION,
        "run": asdict(run),
        "best": {optimizer: {k: r[k] for k in BEST_KEYS} for optimizer, r in best.items()},
        "grid": [{k: v for k, v in r.items() if k != "curves"} for r in results],
    }


def add_parser(commands: Any) -> None:
    fig2 = commands.add_parser("figure2", help="Adam vs AMSGrad on an image task (paper Fig. 2)")
    fig2.add_argument("--task", required=True, choices=TASKS)
    fig2.add_argument("--out", type=Path, required=True, help="folder for figure2_<task>.png/.json")
    names = registry.optimizers(FIGURE2)
    fig2.add_argument("--optimizers", nargs="+", default=list(names), choices=names)
    fig2.add_argument("--beta2", nargs="+", type=float, default=list(PAPER_BETA2S))
    fig2.add_argument("--lrs", nargs="+", type=float, default=list(DEFAULT_LRS), help="alpha grid")
    length = fig2.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, default=None, help="optimizer steps per run")
    length.add_argument("--epochs", type=int, default=None, help="default: the config's")
    fig2.add_argument("--eval-every", type=int, default=50, help="held-out loss every N steps")
    fig2.add_argument("--log-every", type=int, default=10, help="train loss every N steps")
    fig2.add_argument("--diag-every", type=int, default=None, help="diag/ keys every N steps")
    fig2.add_argument("--data-dir", default=None, help="default: the config's (data)")
    fig2.add_argument("--train-size", type=int, default=None)
    fig2.add_argument("--val-size", type=int, default=None, help="the held-out split")
    fig2.add_argument("--num-workers", type=int, default=None)
    fig2.add_argument("--wandb", choices=("offline", "online", "off"), default="offline")


def run(args: argparse.Namespace) -> None:
    run = Figure2Run(
        max_steps=args.max_steps, epochs=args.epochs, eval_every=args.eval_every,
        log_every=args.log_every, diag_every=args.diag_every, data_dir=args.data_dir,
        train_size=args.train_size, val_size=args.val_size, num_workers=args.num_workers,
        wandb=args.wandb,
    )  # fmt: skip
    summary = figure2(args.task, args.out, args.optimizers, args.beta2, args.lrs, run)
    for point in summary["grid"]:
        print(
            f"{point['name']:32s} final held-out loss {point['final_val_loss']:.4f}  "
            f"final train loss {point['final_train_loss']:.4f}"
        )
    for optimizer, best in summary["best"].items():
        print(f"best {optimizer}: {best['name']} (held-out loss {best['final_val_loss']:.4f})")
    print(f"wrote {args.out / f'figure2_{args.task}.png'} and .json")
