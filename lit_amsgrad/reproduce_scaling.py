"""Mini-batch and distributed speed-up of Generic Adam: optimizer steps to a fixed target.

    python -m lit_amsgrad.reproduce scaling --out DIR [--quick] [--mnist-dir D]

Generic Adam's second claim (Chen, Shen, Zou, Liu, JMLR 2022): mini-batch and distributed
Adam are linearly accelerated, so the steps to a given accuracy fall in proportion to the
mini-batch size B and to the number of nodes N. Every run is ``train.py fit`` on a config of
``configs/experiments/scaling.yaml``: the B sweep in this process (``lit_amsgrad.cli.main``),
the N sweep as ``train.py`` subprocesses with ``--trainer.strategy=ddp`` on N CPU processes
(gloo), each drawing its own samples with a per-process batch b (global batch N * b). A run
stops at its target (``StopAtTarget``); the diagnostics callback of the config logs to CSV.
Writes ``DIR/scaling.json``, ``DIR/scaling.png`` and ``.pdf``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_amsgrad import figure_style
from lit_amsgrad.errors import ConfigError
from lit_amsgrad.experiments import ONE_THREAD, QUIET, check_out, fit_quietly, load_experiment
from lit_amsgrad.real_data import MNIST_FILES, SHARED_DATA, real_mnist

REPO = Path(__file__).resolve().parents[1]
LINEAR_EFFICIENCY = 0.5  # "linear speed-up holds" while steps(B0) B0 / (B steps(B)) >= this
DIAG_KEYS = ("diag/gamma_neg_frac", "diag/eff_lr/median")


# ------------------------------------------------------------------ arguments of one run
def _logger(run_dir: Path) -> str:
    csv_logger = {"save_dir": str(run_dir), "name": "csv", "version": ""}
    return json.dumps(
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": csv_logger}
    )


def _stop(monitor: str, target: float) -> str:
    stop = {"monitor": monitor, "target": target}
    return json.dumps({"class_path": "lit_amsgrad.stop_at_target.StopAtTarget", "init_args": stop})


def _ddp(world_size: int | None) -> list[str]:
    """None: a plain single-process fit; N: Lightning DDP on N CPU processes (gloo)."""
    if world_size is None:
        return []
    return ["--trainer.accelerator=cpu", f"--trainer.devices={world_size}",
            "--trainer.strategy=ddp"]  # fmt: skip


def synthetic_args(
    spec: dict, batch: int, world_size: int | None, run_dir: Path, seed: int = 0
) -> list[str]:
    """The stochastic counterexample with ``batch`` samples per round on each process,
    its draws from generator seed ``seed``."""
    from lit_amsgrad.reproduce import config_args

    run = spec["synthetic"]
    model, data = "--model.init_args", "--data.init_args"
    return [
        *config_args(run["config"]), f"{model}.batch_size={batch}",
        f"{model}.num_seeds={run['seeds']}", f"{model}.seed={seed}",
        f"{data}.num_rounds={run['max_rounds']}",
        f"{data}.rounds_per_step={run['rounds_per_step']}", f"--diag_every={run['diag_every']}",
        f"--trainer.logger={_logger(run_dir)}", f"--trainer.default_root_dir={run_dir}",
        f"--trainer.callbacks+={_stop('expected_avg_regret', run['target'])}",
        *_ddp(world_size), *QUIET,
    ]  # fmt: skip


def mnist_args(
    spec: dict, seed: int, global_batch: int, world_size: int | None, run_dir: Path, data: Path
) -> list[str]:
    """Logistic regression on the real digits with a global batch of ``global_batch``."""
    from lit_amsgrad.reproduce import config_args

    run = spec["mnist"]
    every = max(1, run["eval_examples"] // global_batch)
    d = "--data.init_args"
    return [
        *config_args(run["config"]), f"--seed_everything={seed}",
        f"{d}.batch_size={global_batch}", f"{d}.data_dir={data}", f"{d}.num_workers=0",
        f"{d}.train_size={run['train_size']}", f"{d}.val_size={run['val_size']}",
        f"--trainer.max_steps={run['max_steps']}", "--trainer.max_epochs=-1",
        "--trainer.check_val_every_n_epoch=null", f"--trainer.val_check_interval={every}",
        f"--trainer.log_every_n_steps={every}", f"--diag_every={every}",
        f"--trainer.logger={_logger(run_dir)}", f"--trainer.default_root_dir={run_dir}",
        f"--trainer.callbacks={_diagnostics_and_stop(run['config'], 'val/loss', run['target'])}",
        "--trainer.enable_checkpointing=false", *_ddp(world_size), *QUIET,
    ]  # fmt: skip


def _diagnostics_and_stop(config: str, monitor: str, target: float) -> str:
    """The config's OptimizerDiagnostics as it is, and StopAtTarget, as the only callbacks:
    the image configs' checkpoints (saved at every evaluation here) would cost more than the
    training of a logistic regression, and a steps-to-target run needs none."""
    from lit_amsgrad.cli import load_config

    callbacks = load_config(config)["trainer"].get("callbacks") or []
    keep = [c for c in callbacks if c.get("class_path") == "callbacks.OptimizerDiagnostics"]
    if not keep:
        raise ConfigError(f"scaling draws diag/ keys: {config} must enable OptimizerDiagnostics")
    return json.dumps([*keep, json.loads(_stop(monitor, target))])


# ------------------------------------------------------------------------ running them
def fit(args: list[str], run_dir: Path, world_size: int | None) -> None:
    """In this process (B sweep) or as ``train.py`` with N DDP processes (N sweep)."""
    shutil.rmtree(run_dir, ignore_errors=True)  # a rerun must not read old rows
    run_dir.mkdir(parents=True)
    if world_size is None:
        fit_quietly(args)
        return
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("WANDB_SERVICE", "LIT_AMSGRAD"))
    }
    env.setdefault("WANDB_MODE", "disabled")
    env.update(ONE_THREAD)  # N processes on few cores: one thread each (experiments.one_thread)
    for key in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE"):
        env.pop(key, None)  # a fresh rendezvous: Lightning picks a free port
    command = [sys.executable, str(REPO / "train.py"), "fit", *args]
    done = subprocess.run(command, cwd=run_dir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"DDP run in {run_dir} failed ({done.returncode}): " + " | ".join(tail))


def read_rows(run_dir: Path) -> list[dict[str, float]]:
    """The rows of the run's ``csv/metrics.csv``, empty cells left out."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


def steps_to_target(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """The first step whose value is at or below ``target``; None when none is."""
    return next((step for step, value in sorted(points) if value <= target), None)


def diag_means(rows: Sequence[dict[str, float]]) -> dict[str, float | None]:
    """Each diagnostic averaged over the logging steps of the run (the median of eff_lr
    over time is its geometric mean: step sizes spread over decades)."""
    out: dict[str, float | None] = {}
    for key in DIAG_KEYS:
        values = [row[key] for row in rows if key in row and math.isfinite(row[key])]
        if key.startswith("diag/eff_lr"):
            values = [math.log(v) for v in values if v > 0]
            out[key] = math.exp(sum(values) / len(values)) if values else None
        else:
            out[key] = sum(values) / len(values) if values else None
    return out


def synthetic_point(spec: dict, batch: int, world_size: int | None, out: Path) -> dict:
    """Rounds until the expected average regret, averaged over the run's independent
    coordinates, is at or below the target; the mean of that over the generator seeds."""
    run, processes = spec["synthetic"], world_size or 1
    per_seed, diags, rounds_run = [], [], []
    for seed in run["model_seeds"]:
        run_dir = out / f"seed={seed}"
        fit(synthetic_args(spec, batch, world_size, run_dir, seed), run_dir, world_size)
        rows = read_rows(run_dir)
        curve = [(row["round"], row["expected_avg_regret"]) for row in rows if "round" in row]
        per_seed.append(steps_to_target(curve, run["target"]))
        rounds_run.append(max(step for step, _ in curve))
        diags.append(diag_means(rows))
    reached = [s for s in per_seed if s is not None]
    mean = sum(reached) / len(reached) if len(reached) == len(per_seed) else None
    return {
        "batch_size": batch * processes,
        "per_process_batch": batch,
        "world_size": processes,
        "steps_to_target": mean,
        "steps_to_target_per_seed": per_seed,
        "reached": mean is not None,
        "rounds_run_per_seed": rounds_run,
        **{k: _mean([d[k] for d in diags]) for k in DIAG_KEYS},
    }


def mnist_point(spec: dict, batch: int, world_size: int | None, out: Path, data: Path) -> dict:
    """Mean over seeds of the steps until the held-out loss <= target (None if a seed never)."""
    run, processes = spec["mnist"], world_size or 1
    global_batch = batch * processes
    per_seed, diags = [], []
    for seed in run["seeds"]:
        run_dir = out / f"seed={seed}"
        fit(mnist_args(spec, seed, global_batch, world_size, run_dir, data), run_dir, world_size)
        rows = read_rows(run_dir)
        # Lightning logs at the 0-based index of the step: step + 1 updates were done
        curve = [(row["step"] + 1, row["val/loss"]) for row in rows if "val/loss" in row]
        per_seed.append(steps_to_target(curve, run["target"]))
        diags.append(diag_means(rows))
    reached = [s for s in per_seed if s is not None]
    mean = sum(reached) / len(reached) if len(reached) == len(per_seed) else None
    return {
        "batch_size": global_batch,
        "per_process_batch": batch,
        "world_size": processes,
        "steps_to_target": mean,
        "steps_to_target_per_seed": per_seed,
        "reached": mean is not None,
        **{k: _mean([d[k] for d in diags]) for k in DIAG_KEYS},
    }


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def add_efficiency(points: list[dict], key: str) -> float | None:
    """Each point's speed-up over the first point that reached the target, and that over the
    linear one (the ratio of ``key``); returns the largest ``key`` up to which every point
    from that base on keeps an efficiency of at least LINEAR_EFFICIENCY (None: none reached)."""
    base = next((p for p in points if p["reached"]), None)
    for point in points:
        point["speedup"] = point["linear_efficiency"] = None
        if base is not None and point["reached"] and point[key] >= base[key]:
            point["speedup"] = base["steps_to_target"] / point["steps_to_target"]
            point["linear_efficiency"] = point["speedup"] * base[key] / point[key]
    holds = None
    for point in points[points.index(base) :] if base is not None else []:
        if point["linear_efficiency"] is None or point["linear_efficiency"] < LINEAR_EFFICIENCY:
            break
        holds = point[key]
    return holds


def add_speedups(summary: dict[str, Any]) -> None:
    """Speed-ups, efficiencies and where linear stops holding, from the points alone."""
    for task, info in summary["tasks"].items():
        for sweep in ("batch_size", "world_size"):
            points = [p for p in summary[sweep] if p["task"] == task]
            info[f"linear_speedup_up_to_{sweep}"] = add_efficiency(points, sweep)


def redraw(out: Path) -> dict[str, Any]:
    """Recompute the derived fields of ``out/scaling.json`` and draw it again, no training."""
    path = out / "scaling.json"
    if not path.is_file():
        raise ConfigError(f"--redraw: {path} does not exist; run without --redraw first")
    summary = json.loads(path.read_text())
    add_speedups(summary)
    path.write_text(json.dumps(summary, indent=2))
    plot_scaling(summary, out / "scaling")
    return summary


# -------------------------------------------------------------------------- the sweeps
def scaling(out: Path, quick: bool = False, mnist_source: Path | None = None) -> dict[str, Any]:
    """Run the B and N sweeps; write scaling.json/.png/.pdf under ``out``; returns the JSON."""
    from rich.progress import Progress

    check_out(out)
    spec = load_experiment("scaling", quick)
    tasks = [task for task in TASKS if "batch_sizes" in spec.get(task, {})]
    data = None
    if "mnist" in tasks:
        source = mnist_source or SHARED_DATA / "mnist"
        data = real_mnist(out / "runs" / "scaling" / "data", source)
        if data is None:
            raise ConfigError(
                f"scaling: the real MNIST digits are not in {source} ({MNIST_FILES[0]}.gz, "
                f"{MNIST_FILES[1]}.gz); pass --mnist-dir, or --quick (synthetic only)"
            )
    out.mkdir(parents=True, exist_ok=True)
    root = out / "runs" / "scaling"
    jobs = []
    for task in tasks:
        run = spec[task]
        jobs += [(task, "batch_size", b, None) for b in run["batch_sizes"]]
        jobs += [(task, "world_size", run["per_process_batch"], n) for n in run["world_sizes"]]
    results: dict[str, dict[str, list]] = {"batch_size": {}, "world_size": {}}
    started = time.monotonic()
    with Progress() as progress:
        bar = progress.add_task("scaling", total=len(jobs))
        for task, sweep, batch, n in jobs:
            name = f"B={batch}" if n is None else f"N={n}_b={batch}"
            progress.update(bar, description=f"{task} {name}")
            run_dir = root / task / name
            if task == "synthetic":
                point = synthetic_point(spec, batch, n, run_dir)
            else:
                point = mnist_point(spec, batch, n, run_dir, data)
            results[sweep].setdefault(task, []).append({"task": task, **point})
            progress.advance(bar)
    summary = scaling_summary(spec, tasks, results, time.monotonic() - started)
    (out / "scaling.json").write_text(json.dumps(summary, indent=2))
    plot_scaling(summary, out / "scaling")
    return summary


TASKS = ("synthetic", "mnist")
TARGETS = {
    "synthetic": "expected average regret (1/t) sum_s F(x_s) - min F <= {target} "
    "(F = E f_t) of the mean over {seeds} independent runs, mean over seeds {model_seeds}",
    "mnist": "held-out loss <= {target}, mean over seeds {seeds} of the first evaluated step",
}


def scaling_summary(spec: dict, tasks: Sequence[str], results: dict, wall: float) -> dict:
    """The JSON: both sweeps as flat lists, each task's target and where linear stops."""
    described = {}
    for task in tasks:
        run = spec[task]
        described[task] = {
            "config": run["config"],
            "target": run["target"],
            "target_meaning": TARGETS[task].format(
                target=run["target"], seeds=run["seeds"], model_seeds=run.get("model_seeds")
            ),
            "per_process_batch": run["per_process_batch"],
        }
    summary = {
        "tasks": described,
        "batch_size": [p for points in results["batch_size"].values() for p in points],
        "world_size": [p for points in results["world_size"].values() for p in points],
    }
    add_speedups(summary)
    return {
        "experiment": "scaling",
        "size": spec["size"],
        "optimizer": "GenericAdam (r = 1, s = 0.5, theta = 1; configs/optimizers/generic_adam.yaml)",
        "linear_efficiency_threshold": LINEAR_EFFICIENCY,
        "wall_time_s": round(wall, 1),
        **summary,
    }


# ---------------------------------------------------------------------------- the figure
LABELS = {"synthetic": "stochastic counterexample", "mnist": "MNIST logistic regression"}
COLORS = {"synthetic": "tab:blue", "mnist": "tab:orange"}


def plot_scaling(summary: dict[str, Any], stem: Path) -> None:
    """Steps to target against B and against N with the linear-speed-up line, and the
    diagnostics against B. Drawn from the JSON summary alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5), constrained_layout=True)
    (ax_b, ax_n), (ax_gamma, ax_eff) = axes
    for task in summary["tasks"]:
        color, label = COLORS.get(task), LABELS.get(task, task)
        for ax, sweep in ((ax_b, "batch_size"), (ax_n, "world_size")):
            points = [p for p in summary[sweep] if p["task"] == task]
            _plot_steps(ax, points, sweep, color, label)
        points = [p for p in summary["batch_size"] if p["task"] == task]
        for ax, key in ((ax_gamma, "diag/gamma_neg_frac"), (ax_eff, "diag/eff_lr/median")):
            kept = [(p["batch_size"], p[key]) for p in points if p.get(key) is not None]
            if kept:
                ax.plot(*zip(*kept, strict=True), marker="o", color=color, label=label)
    b_text = ", ".join(f"$b$ = {i['per_process_batch']} ({t})" for t, i in summary["tasks"].items())
    ax_b.set(xlabel=r"mini-batch size $B$ (one process)", ylabel="optimizer steps to target",
             title=r"mini-batch: steps to target against $B$")  # fmt: skip
    ax_n.set(xlabel=r"DDP processes $N$ (global batch $N b$)", ylabel="optimizer steps to target",
             title=f"distributed: steps to target against $N$ ({b_text})")  # fmt: skip
    ax_gamma.set(xlabel=r"mini-batch size $B$", ylim=(-0.03, 1.03),
                 ylabel=r"fraction of coordinates with $\Gamma_t < 0$",
                 title="diag/gamma_neg_frac, mean over the run")  # fmt: skip
    ax_eff.set(xlabel=r"mini-batch size $B$", yscale="log",
               ylabel=r"effective step $\alpha_t / (\sqrt{v_t} + \epsilon)$",
               title="diag/eff_lr/median, geometric mean over the run")  # fmt: skip
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax, sweep in ((ax_b, "batch_size"), (ax_n, "world_size"), (ax_gamma, "batch_size"),
                      (ax_eff, "batch_size")):  # fmt: skip
        ax.set_xscale("log", base=2)
        ticks = sorted({p["world_size" if sweep == "world_size" else "batch_size"]
                        for p in summary[sweep]})  # fmt: skip
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        if ax.get_yscale() == "log":
            ax.yaxis.set_major_formatter(ScalarFormatter())
        if ax.get_legend_handles_labels()[0]:
            ax.legend(
                fontsize=7,
                loc={id(ax_b): "lower left", id(ax_n): "center right"}.get(id(ax), "best"),
            )
    targets = "\n".join(f"{LABELS.get(t, t)}: target {i['target_meaning']}"
                        for t, i in summary["tasks"].items())  # fmt: skip
    fig.suptitle(f"Generic Adam ($r = 1$, $s = 1/2$): optimizer steps to a fixed target\n{targets}",
                 fontsize=9)  # fmt: skip
    figure_style.save_figure(fig, stem)


def _plot_steps(ax: Any, points: list[dict], key: str, color: Any, label: str) -> None:
    """Measured steps and the linear line from the first point that reached the target; a
    point that missed it is a cross on the lower edge."""
    reached = [(p[key], p["steps_to_target"]) for p in points if p["reached"]]
    if reached:
        ax.plot(*zip(*reached, strict=True), marker="o", color=color, label=f"{label}: measured")
    base = next((p for p in points if p["reached"]), None)
    if base is not None:
        xs = [p[key] for p in points if p[key] >= base[key]]
        ax.plot(xs, [base["steps_to_target"] * base[key] / x for x in xs], ls="--", color=color,
                label=f"{label}: linear speed-up")  # fmt: skip
    missed = [(p[key], max(p["rounds_run_per_seed"])) for p in points
              if not p["reached"] and p.get("rounds_run_per_seed")]  # fmt: skip
    if missed:
        ax.plot(*zip(*missed, strict=True), ls="none", marker="x", ms=9, color=color,
                label=f"{label}: target not reached in the run (drawn at its length)")  # fmt: skip
    ax.set_yscale("log")


# ------------------------------------------------------------------- the subcommand
COMMAND = "scaling"


def add_parser(commands: Any) -> None:
    """``python -m lit_amsgrad.reproduce scaling``."""
    parser = commands.add_parser(COMMAND, help="steps to target against mini-batch and DDP size")
    parser.add_argument("--out", type=Path, required=True, help="folder for scaling.json/.png/.pdf")
    parser.add_argument(
        "--quick", action="store_true", help="the small synthetic sweep of the tests"
    )
    parser.add_argument("--redraw", action="store_true",
                        help="recompute speed-ups from DIR/scaling.json and redraw it, no training")  # fmt: skip
    parser.add_argument("--mnist-dir", type=Path, default=None,
                        help=f"folder with the MNIST t10k-*.gz files (default {SHARED_DATA / 'mnist'})")  # fmt: skip


def run(args: Any) -> None:
    """Run both sweeps and print one line per point; bad input is one ``error:`` line."""
    try:
        summary = redraw(args.out) if args.redraw else scaling(args.out, args.quick, args.mnist_dir)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    for sweep in ("batch_size", "world_size"):
        for p in summary[sweep]:
            steps = p["steps_to_target"]
            shown = f"{steps:.0f}" if steps is not None else "not reached"
            print(
                f"{p['task']:9s} N={p['world_size']} B={p['batch_size']:<5d} steps to target {shown}"
            )
    print(
        f"wrote {args.out / 'scaling.json'}, .png and .pdf ({summary.get('wall_time_s')} s of fits)"
    )
