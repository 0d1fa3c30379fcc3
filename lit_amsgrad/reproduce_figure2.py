"""Figure 2 of Reddi et al. (2018): Adam and AMSGrad on an image task over a grid of beta_2 and alpha.

    python -m lit_amsgrad.reproduce figure2 --task mnist_logreg --out DIR [--seeds 5]

Every grid point is ``<task>_<optimizer>.yaml`` (the task's and the optimizer's fragments)
through the same CLI as ``train.py`` with overrides of alpha and beta_2 (beta_1 is the
config's), run once per seed, logged to CSV and W&B (offline by default). A seed sets the
initial weights, dropout (``seed_everything``) and the training order (``data.seed``); the
splits stay fixed (``data.split_seed``), so every seed is scored on the same examples.

Each optimizer's best setting is chosen on the validation split (lowest mean final validation
loss over the seeds) and reported on the test split, which the choice never reads. Writes
``DIR/figure2_<task>.{png,pdf,json}``; ``--redraw`` draws them again from the JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lit_amsgrad import registry, stats
from lit_amsgrad.errors import ConfigError
from lit_amsgrad.registry import FIGURE2, FIGURE2_TASKS
from lit_amsgrad.reproduce import config_args, quiet_lightning

COMMAND = "figure2"

TASKS = FIGURE2_TASKS  # the image tasks (lit_amsgrad.registry)
PAPER_BETA2S = (0.99, 0.999)
DEFAULT_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
DIAG_KEYS = ("diag/gamma_neg_frac", "diag/vhat_active_frac")
CURVE_KEYS = ("train/loss", "val/loss", *DIAG_KEYS)
SELECTION = (
    "lowest mean final validation loss over the seeds; reported on the test split, "
    "which the selection never reads"
)
DEFAULT_LOGGER = "lit_amsgrad.loggers.RunWandbLogger"
#: what every seed reports, and each grid point as mean and interval over its seeds
SEED_KEYS = ("final_train_loss", "final_val_loss", "final_val_acc", "test_loss", "test_acc")


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
    """What every grid point shares: length, evaluation cadence, data (None: the config's),
    the seeds and any further ``train.py`` settings (``sets``: ``key=value`` without ``--``)."""

    max_steps: int | None = None
    epochs: int | None = None
    eval_every: int = 50
    log_every: int = 10
    diag_every: int | None = None
    data_dir: str | None = None
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    num_workers: int | None = None
    wandb: str = "offline"
    seeds: tuple[int, ...] = (0,)
    sets: tuple[str, ...] = ()


def grid(
    optimizers: Sequence[str], beta2s: Sequence[float], lrs: Sequence[float]
) -> list[GridPoint]:
    """Every (optimizer, beta_2, alpha), in the order they run."""
    return [GridPoint(o, b, lr) for o in optimizers for b in beta2s for lr in lrs]


def figure2_args(
    task: str, point: GridPoint, run: Figure2Run, run_dir: Path, seed: int = 0
) -> list[str]:
    """One grid point and seed as train.py's arguments: the task's config plus overrides
    (alpha and beta_2; beta_1 stays the config's; the seed of the weights and the order)."""
    config = f"{task}_{point.optimizer}.yaml"
    optimizer = "--model.init_args.optimizer.init_args"
    beta1 = config_beta1(config)
    args = [
        *config_args(config),
        f"{optimizer}.lr={point.lr}", f"{optimizer}.betas=[{beta1}, {point.beta2}]",
        f"--seed_everything={seed}", f"--data.init_args.seed={seed}",
        f"--trainer.default_root_dir={run_dir}",
        # validate every eval_every optimizer steps, across epoch boundaries
        "--trainer.check_val_every_n_epoch=null", f"--trainer.val_check_interval={run.eval_every}",
        f"--trainer.log_every_n_steps={run.log_every}",
        f"--trainer.logger={json.dumps(_loggers(task, point, run, run_dir, seed))}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    if run.max_steps is not None:
        args += [f"--trainer.max_steps={run.max_steps}", "--trainer.max_epochs=-1"]
    elif run.epochs is not None:
        args.append(f"--trainer.max_epochs={run.epochs}")
    for key in ("data_dir", "train_size", "val_size", "test_size", "num_workers"):
        if getattr(run, key) is not None:
            args.append(f"--data.init_args.{key}={getattr(run, key)}")
    args += [f"--{setting}" for setting in run.sets]
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


def _loggers(
    task: str, point: GridPoint, run: Figure2Run, run_dir: Path, seed: int
) -> list[dict[str, Any]]:
    """CSV always (the figure is drawn from it), W&B unless ``run.wandb == "off"``."""
    csv_logger = {"save_dir": str(run_dir), "name": "csv", "version": ""}
    loggers = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": csv_logger}]
    if run.wandb != "off":
        wandb_logger = {
            "save_dir": str(run_dir),
            "name": f"{task}/{point.name}/seed={seed}",
            "group": f"figure2_{task}",  # the W&B report of lit_amsgrad.dashboard reads it
            "job_type": "figure2",
            "tags": ["figure2", task, f"beta2={point.beta2:g}", f"lr={point.lr:g}", f"seed={seed}"],
            "offline": run.wandb == "offline",
        }
        loggers.append({"class_path": DEFAULT_LOGGER, "init_args": wandb_logger})
    return loggers


def fit_grid_point(
    args: list[str], run: Figure2Run, extra_callbacks: Sequence[Any] = ()
) -> tuple[Any, dict[str, float]]:
    """Fit one grid point and seed through the project's CLI; returns the CLI (its trainer
    and model) and the final validation and test loss and accuracy."""
    from lit_amsgrad.cli import AMSGradCLI, _finish_wandb
    from lit_amsgrad.hook_dispatch import skip_noop_hooks

    quiet_lightning()
    cli = AMSGradCLI(args=args, run=False, save_config_callback=None, run_name="reproduce")
    diagnostics = [c for c in cli.trainer.callbacks if type(c).__name__ == "OptimizerDiagnostics"]
    if not diagnostics:
        raise ValueError("figure2 draws diag/ keys: the config must enable OptimizerDiagnostics")
    if run.diag_every is not None:
        for callback in diagnostics:  # read when training starts
            callback.log_every_n_steps = run.diag_every
    skip_noop_hooks(extra_callbacks)  # as the CLI does for the config's callbacks
    cli.trainer.callbacks.extend(extra_callbacks)
    try:
        cli.trainer.fit(cli.model, cli.datamodule)
        final = _final_validation(cli, run.eval_every)
        (test,) = cli.trainer.test(cli.model, cli.datamodule, verbose=False)
        final.update(test_loss=float(test["test/loss"]), test_acc=float(test["test/acc"]))
    finally:
        _finish_wandb()  # one W&B run per grid point and seed
    return cli, final


def _final_validation(cli: Any, eval_every: int) -> dict[str, float]:
    """Validation loss and accuracy after the last step: evaluated again unless the
    schedule just did."""
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


def summarize_seed(seed: int, cli: Any, final: dict[str, float]) -> dict[str, Any]:
    """One seed of one grid point: its final numbers and the curves the figure needs."""
    csv_path = Path(cli.trainer.default_root_dir) / "csv" / "metrics.csv"
    curves = read_curves(csv_path)
    steps = cli.trainer.global_step
    val = [p for p in curves.get("val/loss", []) if p[0] < steps]
    curves["val/loss"] = [*val, (steps, final["loss"])]  # the last point is the final one
    train = curves.get("train/loss", [])
    tail = [v for s, v in train if s > 0.9 * steps] or [v for _, v in train[-1:]]
    return {
        "seed": seed,
        "steps": steps,
        "final_train_loss": sum(tail) / len(tail) if tail else float("nan"),
        "final_val_loss": final["loss"],
        "final_val_acc": final["acc"],
        "test_loss": final["test_loss"],
        "test_acc": final["test_acc"],
        "curves": {k: [list(p) for p in curves[k]] for k in CURVE_KEYS if k in curves},
        "metrics_csv": str(csv_path),
    }


def summarize_point(point: GridPoint, seeds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A grid point over its seeds: each key's mean (top level) and its interval."""
    intervals = {key: stats.t_interval([s[key] for s in seeds]) for key in SEED_KEYS}
    return {
        **asdict(point),
        "name": point.name,
        "steps": seeds[0]["steps"],
        **{key: interval.mean for key, interval in intervals.items()},
        "intervals": {key: interval.as_json() for key, interval in intervals.items()},
        "per_seed": [{k: v for k, v in s.items() if k != "curves"} for s in seeds],
    }


def mean_curves(seeds: Sequence[dict[str, Any]]) -> dict[str, list[list[float | None]]]:
    """Per key, [iteration, mean, low, high] over the seeds at every logged iteration (the
    seeds share one schedule, so they log at the same iterations)."""
    out = {}
    for key in CURVE_KEYS:
        by_step: dict[int, list[float]] = {}
        for seed in seeds:
            for step, value in seed["curves"].get(key, []):
                by_step.setdefault(int(step), []).append(value)
        if by_step:
            rows = []
            for step, values in sorted(by_step.items()):
                interval = stats.t_interval(values)
                rows.append([step, interval.mean, interval.low, interval.high])
            out[key] = rows
    return out


def best_points(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per optimizer, the grid point with the lowest (mean) final validation loss; NaN is
    worst. Reads nothing of the test split."""
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


def differences(best: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each optimizer's best against the first one's (AMSGrad - Adam), paired by seed, on
    the test split and the validation split."""
    names = list(best)
    if len(names) < 2:
        return {}
    base = best[names[0]]
    out = {}
    for name in names[1:]:
        other = best[name]
        shared = sorted(
            {s["seed"] for s in base["per_seed"]} & {s["seed"] for s in other["per_seed"]}
        )
        pick = {s["seed"]: s for s in base["per_seed"]}, {s["seed"]: s for s in other["per_seed"]}
        out[f"{name} - {names[0]}"] = {
            "seeds": shared,
            **{
                key: stats.paired_difference(
                    [pick[0][seed][key] for seed in shared], [pick[1][seed][key] for seed in shared]
                ).as_json()
                for key in ("test_acc", "test_loss", "final_val_loss")
            },
        }
    return out


def figure2(
    task: str,
    out: Path,
    optimizers: Sequence[str] | None = None,
    beta2s: Sequence[float] = PAPER_BETA2S,
    lrs: Sequence[float] = DEFAULT_LRS,
    run: Figure2Run = Figure2Run(),
    resume: bool = False,
) -> dict[str, Any]:
    """Run the grid of ``task`` over ``run.seeds``, write figure2_<task>.png/.pdf/.json under
    ``out``; returns the JSON.

    ``optimizers``: registry names, by default those the registry puts in Figure 2.
    ``resume``: reuse every fit whose folder holds the result of exactly these arguments
    (``FIT_RESULT``), so a stopped grid goes on where it stopped, and disjoint parts of one
    grid (e.g. one beta_2 each) can run in parallel processes and be drawn by a last call
    over the whole grid."""
    from rich.progress import Progress

    optimizers = registry.optimizers(FIGURE2) if optimizers is None else optimizers
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    if not run.seeds or len(set(run.seeds)) != len(run.seeds):
        raise ConfigError(f"seeds must be distinct and at least one, got {list(run.seeds)}")
    out.mkdir(parents=True, exist_ok=True)
    points = grid(optimizers, beta2s, lrs)
    results, curves, reused = [], {}, 0
    started = time.monotonic()
    with Progress() as progress:
        overall = progress.add_task(f"figure 2 {task}", total=len(points) * len(run.seeds))
        steps = progress.add_task("steps", total=None)
        for point in points:
            seeds = []
            for seed in run.seeds:
                progress.update(overall, description=f"{task} {point.name} seed {seed}")
                run_dir = out / "runs" / task / point.name / f"seed={seed}"
                args = figure2_args(task, point, run, run_dir, seed)
                result = finished_fit(run_dir, args) if resume else None
                if result is None:
                    shutil.rmtree(run_dir / "csv", ignore_errors=True)  # a rerun reads its own rows
                    fit_started = time.monotonic()
                    cli, final = fit_grid_point(args, run, [_step_progress(progress, steps)])
                    result = summarize_seed(seed, cli, final)
                    result["fit_seconds"] = round(time.monotonic() - fit_started, 1)
                    _write_json(run_dir / FIT_RESULT, {"args": args, "result": result})
                else:
                    reused += 1
                seeds.append(result)
                progress.advance(overall)
            results.append(summarize_point(point, seeds))
            curves[point.name] = mean_curves(seeds)
    summary = figure2_summary(task, results, curves, run, time.monotonic() - started)
    summary["reused_fits"] = reused
    _write_json(out / f"figure2_{task}.json", summary)
    plot_figure2(summary, out / f"figure2_{task}")
    return summary


FIT_RESULT = "fit_result.json"


def finished_fit(run_dir: Path, args: list[str]) -> dict[str, Any] | None:
    """The result of a fit in ``run_dir`` that ran with exactly ``args``; None if there is
    none, or if it ran with other arguments (then it is fitted again)."""
    path = run_dir / FIT_RESULT
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved["result"] if saved.get("args") == args else None


def _write_json(path: Path, value: Any) -> None:
    """Whole or not at all: a process killed while writing leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def figure2_summary(
    task: str,
    results: Sequence[dict[str, Any]],
    curves: dict[str, dict[str, list]],
    run: Figure2Run,
    wall_seconds: float,
) -> dict[str, Any]:
    """The JSON: the best setting per optimizer with its mean curves, the paired differences
    on the test split, every grid point's per-seed results and intervals."""
    best = best_points(results)
    return {
        "task": task,
        "selection": SELECTION,
        "interval": stats.METHOD,
        "run": asdict(run),
        "wall_seconds": round(wall_seconds, 1),
        "fit_seconds": round(
            sum(s.get("fit_seconds", 0.0) for r in results for s in r["per_seed"]), 1
        ),  # fmt: skip
        "best": {name: {**r, "curves": curves[r["name"]]} for name, r in best.items()},
        "differences": differences(best),
        "grid": list(results),
    }


def _step_progress(progress: Any, task: Any) -> Any:
    """A Lightning callback that moves a rich progress task with the optimizer steps."""
    from lightning.pytorch.callbacks import Callback

    class StepProgress(Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            progress.reset(task, total=trainer.estimated_stepping_batches)

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            progress.update(task, completed=trainer.global_step)

    return StepProgress()


# --------------------------------------------------------------------------------- drawing
def plot_figure2(summary: dict[str, Any], stem: Path) -> list[Path]:
    """Train and validation loss of each optimizer's best setting (mean over seeds with its
    95% band), its diagnostics, and the final validation loss of every grid point.

    Drawn from the JSON alone, so the figure can be redrawn without training again."""
    from lit_amsgrad.figure_style import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    (ax_train, ax_val), (ax_diag, ax_grid) = axes
    for optimizer, result in summary["best"].items():
        _plot_best(ax_train, ax_val, ax_diag, optimizer, result)
    _plot_grid(ax_grid, summary["grid"])
    ax_train.set(title="(a) training loss (logged batches, moving average of 10)",
                 xlabel="iteration $t$", ylabel="cross-entropy loss")  # fmt: skip
    ax_val.set(title="(b) validation loss", xlabel="iteration $t$", ylabel="cross-entropy loss")
    ax_diag.set(
        title=r"(c) solid: fraction of coordinates with $\Gamma_t < 0$; "
        "\n" r"dashed: fraction with $\hat v_t > v_t$ (AMSGrad)",
        xlabel="iteration $t$", ylabel="fraction of coordinates", ylim=(-0.03, 1.03),
    )  # fmt: skip
    ax_grid.set(title="(d) final validation loss of every grid point",
                xlabel=r"step size $\alpha$", ylabel="cross-entropy loss", xscale="log")  # fmt: skip
    _log_scale_if_positive(ax_grid, [r["final_val_loss"] for r in summary["grid"]])
    lrs = sorted({r["lr"] for r in summary["grid"]})
    ax_grid.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
    ax_grid.minorticks_off()
    for ax in axes.flat:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(figure2_title(summary))
    return save_figure(fig, stem)


def figure2_title(summary: dict[str, Any]) -> str:
    """What the figure shows, from its numbers: the task, the seeds, each best's test
    accuracy and the paired difference, with their intervals."""
    task = registry.FIGURE2_TASK_LABELS.get(summary["task"], summary["task"])
    best = summary["best"]
    n = min((len(r["per_seed"]) for r in best.values()), default=0)
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    parts = []
    for optimizer, result in best.items():
        acc = result["intervals"]["test_acc"]
        parts.append(f"{registry.label(optimizer)} {_percent(acc)}")
    line2 = f"test accuracy at the best setting by validation loss ({seeds}): " + ", ".join(parts)
    for name, diff in summary.get("differences", {}).items():
        other, base = (registry.label(x) for x in name.split(" - "))
        d = diff["test_acc"]
        if d["low"] is None:
            line2 += f"; {other} $-$ {base}: {100 * d['mean']:+.2f} points"
        else:
            verdict = "no difference resolved" if d["low"] <= 0 <= d["high"] else (
                f"{other if d['mean'] > 0 else base} ahead")  # fmt: skip
            line2 += (f"; {other} $-$ {base}: {100 * d['mean']:+.2f} points "
                      f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}], {verdict}")  # fmt: skip
    names = " and ".join(registry.label(optimizer) for optimizer in best)
    return f"{task}: {names} over the grid of Figure 2\n{line2}"


def _percent(interval: dict[str, Any]) -> str:
    if interval["low"] is None:
        return f"{100 * interval['mean']:.2f}%"
    return f"{100 * interval['mean']:.2f} $\\pm$ {100 * (interval['high'] - interval['mean']):.2f}%"


def _plot_best(ax_train: Any, ax_val: Any, ax_diag: Any, optimizer: str, result: dict) -> None:
    name = registry.label(optimizer)
    label = rf"{name} ($\beta_2$ = {result['beta2']:g}, $\alpha$ = {result['lr']:g})"
    curves = result["curves"]
    if curves.get("train/loss"):
        _line_with_band(ax_train, curves["train/loss"], optimizer, label, smooth=10)
    _line_with_band(ax_val, curves["val/loss"], optimizer, label)
    for key, ls in zip(DIAG_KEYS, ("-", "--"), strict=True):
        if curves.get(key):
            steps, means = [r[0] for r in curves[key]], [r[1] for r in curves[key]]
            what = r"$\Gamma_t < 0$" if key == DIAG_KEYS[0] else r"$\hat v_t > v_t$"
            style = {**_style(optimizer, len(steps)), "ls": ls}
            ax_diag.plot(steps, means, **style, label=f"{name}: {what}")


def _style(optimizer: str, points: int) -> dict[str, Any]:
    """The optimizer's line style without its label; a marker on every point of a short
    curve, so that a curve of one point is drawn too."""
    from lit_amsgrad.figure_style import optimizer_style

    style = optimizer_style(optimizer, markevery=None if points <= 12 else 0.1)
    style.pop("label")
    return style


def _line_with_band(ax: Any, rows: list, optimizer: str, label: str, smooth: int = 1) -> None:
    style = _style(optimizer, len(rows))
    steps = [r[0] for r in rows]
    mean = _smooth([r[1] for r in rows], smooth)
    ax.plot(steps, mean, **style, label=label)
    if all(r[2] is not None for r in rows):
        low, high = _smooth([r[2] for r in rows], smooth), _smooth([r[3] for r in rows], smooth)
        ax.fill_between(steps, low, high, color=style.get("color"), alpha=0.2, lw=0)


def _plot_grid(ax: Any, results: Sequence[dict[str, Any]]) -> None:
    from lit_amsgrad.figure_style import optimizer_style

    top = max(r["beta2"] for r in results)
    for optimizer, beta2 in sorted({(r["optimizer"], r["beta2"]) for r in results}):
        line = sorted((r["lr"], r["final_val_loss"], r["intervals"]["final_val_loss"])
                      for r in results if (r["optimizer"], r["beta2"]) == (optimizer, beta2))  # fmt: skip
        lrs = [p[0] for p in line]
        means = [p[1] for p in line]
        errors = [[0.0 if p[2]["low"] is None else p[1] - p[2]["low"] for p in line],
                  [0.0 if p[2]["high"] is None else p[2]["high"] - p[1] for p in line]]  # fmt: skip
        style = optimizer_style(optimizer, markevery=None)
        label = f"{style.pop('label')}, $\\beta_2$ = {beta2:g}"
        if beta2 != top:
            style.update(ls=":", mfc="none")
        ax.errorbar(lrs, means, yerr=errors, capsize=3, **style, label=label)


def _log_scale_if_positive(ax: Any, values: Sequence[float]) -> None:
    """Log y only where every value can be drawn on it: NaN/inf or <= 0 would leave the axis."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 5:
        ax.set_yscale("log")


def _smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average: the logged train losses are single batches, hence noisy."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


# ------------------------------------------------------------------------------ command
def add_parser(commands: Any) -> None:
    fig2 = commands.add_parser(COMMAND, help="Adam vs AMSGrad on an image task (paper Fig. 2)")
    fig2.add_argument("--task", required=True, choices=TASKS)
    fig2.add_argument("--out", type=Path, required=True, help="folder for figure2_<task>.*")
    names = registry.optimizers(FIGURE2)
    fig2.add_argument("--optimizers", nargs="+", default=list(names), choices=names)
    fig2.add_argument("--beta2", nargs="+", type=float, default=list(PAPER_BETA2S))
    fig2.add_argument("--lrs", nargs="+", type=float, default=list(DEFAULT_LRS), help="alpha grid")
    fig2.add_argument("--seeds", type=int, default=1,
                      help="seeds 0..N-1 per grid point (weights, dropout, order)")  # fmt: skip
    length = fig2.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, default=None, help="optimizer steps per run")
    length.add_argument("--epochs", type=int, default=None, help="default: the config's")
    fig2.add_argument("--eval-every", type=int, default=50, help="validation every N steps")
    fig2.add_argument("--log-every", type=int, default=10, help="train loss every N steps")
    fig2.add_argument("--diag-every", type=int, default=None, help="diag/ keys every N steps")
    fig2.add_argument("--data-dir", default=None, help="default: the config's (data)")
    fig2.add_argument("--train-size", type=int, default=None)
    fig2.add_argument("--val-size", type=int, default=None, help="the validation split")
    fig2.add_argument("--test-size", type=int, default=None,
                      help="hold the test split out of the training file (default: official)")  # fmt: skip
    fig2.add_argument("--num-workers", type=int, default=None)
    fig2.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                      help="any train.py setting, e.g. data.init_args.verify_md5=false")  # fmt: skip
    fig2.add_argument("--wandb", choices=("offline", "online", "off"), default="offline")
    fig2.add_argument("--redraw", action="store_true", help="draw again from DIR's JSON")
    fig2.add_argument("--resume", action="store_true",
                      help="reuse the fits in DIR/runs that ran with the same arguments")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    if args.redraw:
        path = args.out / f"figure2_{args.task}.json"
        if not path.is_file():
            raise ConfigError(f"--redraw: {path} does not exist; run without --redraw first")
        summary = json.loads(path.read_text())
        plot_figure2(summary, args.out / f"figure2_{args.task}")
    else:
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
        bad = [s for s in args.sets if "=" not in s or s.startswith("-")]
        if bad:
            raise ConfigError(f"--set takes KEY=VALUE without leading dashes, got {bad}")
        run_settings = Figure2Run(
            max_steps=args.max_steps, epochs=args.epochs, eval_every=args.eval_every,
            log_every=args.log_every, diag_every=args.diag_every, data_dir=args.data_dir,
            train_size=args.train_size, val_size=args.val_size, test_size=args.test_size,
            num_workers=args.num_workers, wandb=args.wandb, seeds=tuple(range(args.seeds)),
            sets=tuple(args.sets),
        )  # fmt: skip
        summary = figure2(
            args.task, args.out, args.optimizers, args.beta2, args.lrs, run_settings, args.resume
        )
    print_summary(summary)
    if summary.get("reused_fits"):
        print(f"reused {summary['reused_fits']} finished fits (--resume)")
    written = ".png and .pdf from the .json" if args.redraw else ".png, .pdf and .json"
    print(f"wrote {args.out / f'figure2_{args.task}'}{written}")


def print_summary(summary: dict[str, Any]) -> None:
    """Every grid point, each best on the test split, and the paired differences."""
    for point in summary["grid"]:
        print(f"{point['name']:32s} validation loss {_interval_text(point, 'final_val_loss')}  "
              f"train loss {_interval_text(point, 'final_train_loss')}")  # fmt: skip
    for optimizer, best in summary["best"].items():
        print(f"best {optimizer}: {best['name']} (validation loss "
              f"{best['final_val_loss']:.4f}); test accuracy {_interval_text(best, 'test_acc')}, "
              f"test loss {_interval_text(best, 'test_loss')}")  # fmt: skip
    for name, diff in summary.get("differences", {}).items():
        for key in ("test_acc", "test_loss"):
            d = diff[key]
            span = "" if d["low"] is None else f" [{d['low']:+.4f}, {d['high']:+.4f}]"
            print(f"{name} {key}: {d['mean']:+.4f}{span} (paired over seeds {diff['seeds']})")


def _interval_text(result: dict[str, Any], key: str) -> str:
    interval = result["intervals"][key]
    if interval["low"] is None:
        return f"{interval['mean']:.4f}"
    return f"{interval['mean']:.4f} +- {interval['high'] - interval['mean']:.4f}"
