"""Generic Adam's convergence region on the paper's counterexamples.

    python -m lit_amsgrad.reproduce generic_adam --out DIR [--quick]

Generic Adam (Chen, Shen, Zou, Liu, JMLR 2022) sets beta_2t = 1 - theta/t^r and
alpha_t = alpha/t^s and converges when 0 < r <= 2s < 2. Every (r, s) cell of the grid in
``configs/experiments/generic_adam.yaml`` is one fit of ``synthetic_<problem>_generic_adam.yaml``
through train.py's CLI with ``r`` and ``s`` overridden, on the online and the stochastic
problem. Writes ``DIR/generic_adam.json`` (one point per cell and problem), ``.png`` and ``.pdf``:
the final iterate (optimum: x = -1) and the average regret of every cell, with the region drawn.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from lit_amsgrad import figure_style
from lit_amsgrad.experiments import QUIET, check_out, fit_quietly, load_experiment

OPTIMIZER = "--model.init_args.optimizer.init_args"


def in_region(r: float, s: float) -> bool:
    """The theory's sufficient condition 0 < r <= 2s < 2."""
    return 0 < r <= 2 * s < 2


def cell_args(config: str, r: float, s: float, rounds: int, seeds: int, run_dir: Path) -> list[str]:
    """One cell as train.py's arguments: the problem's config with r, s, length and seeds."""
    from lit_amsgrad.reproduce import config_args

    return [
        *config_args(config), f"{OPTIMIZER}.r={r}", f"{OPTIMIZER}.s={s}",
        f"--data.init_args.num_rounds={rounds}", f"--model.init_args.num_seeds={seeds}",
        "--trainer.logger=false", f"--trainer.default_root_dir={run_dir}", *QUIET,
    ]  # fmt: skip


def summarize_cell(problem: str, r: float, s: float, module: Any) -> dict[str, Any]:
    """What the JSON keeps of one fit: where the iterate ended and the regret it paid."""
    history = module.history
    last = history[-1][0]
    tail = [h[1] for h in history if h[0] > 0.9 * last] or [history[-1][1]]
    x = module.x.detach()
    return {
        "problem": problem,
        "r": r,
        "s": s,
        "in_region": in_region(r, s),
        "final_x": float(x.mean()),
        "final_x_per_seed": [float(v) for v in x],
        "tail_mean_x": sum(tail) / len(tail),
        "distance_to_optimum": abs(float(x.mean()) + 1.0),
        "avg_regret": history[-1][2],
        "expected_avg_regret": module.expected_history[-1][1],
        "rounds": last,
    }


def generic_adam(out: Path, quick: bool = False) -> dict[str, Any]:
    """Run every (problem, r, s) cell; write generic_adam.json/.png/.pdf under ``out``."""
    from rich.progress import Progress

    check_out(out)
    spec = load_experiment("generic_adam", quick)
    out.mkdir(parents=True, exist_ok=True)
    cells = [(p, r, s) for p in spec["problems"] for r in spec["r"] for s in spec["s"]]
    points, started = [], time.monotonic()
    with Progress() as progress:
        task = progress.add_task("generic adam", total=len(cells))
        for problem, r, s in cells:
            progress.update(task, description=f"{problem} r={r:g} s={s:g}")
            run_dir = out / "runs" / "generic_adam" / problem / f"r={r:g}_s={s:g}"
            shutil.rmtree(run_dir, ignore_errors=True)  # a rerun starts clean
            args = cell_args(spec["problems"][problem], r, s, spec["rounds"][problem],
                             spec["seeds"][problem], run_dir)  # fmt: skip
            cli = fit_quietly(args)
            points.append(summarize_cell(problem, r, s, cli.model))
            progress.advance(task)
    summary = {
        "experiment": "generic_adam",
        "size": spec["size"],
        "configs": spec["problems"],
        "grid": {"r": spec["r"], "s": spec["s"]},
        "rounds": spec["rounds"],
        "seeds": spec["seeds"],
        "region": "0 < r <= 2s < 2",
        "optimum": -1.0,
        "wall_time_s": round(time.monotonic() - started, 1),
        "points": points,
    }
    (out / "generic_adam.json").write_text(json.dumps(summary, indent=2))
    plot_generic_adam(summary, out / "generic_adam")
    return summary


def redraw(out: Path) -> dict[str, Any]:
    """Draw ``out/generic_adam.json`` again (after a change to the figure), no training."""
    from lit_amsgrad.errors import ConfigError

    path = out / "generic_adam.json"
    if not path.is_file():
        raise ConfigError(f"--redraw: {path} does not exist; run without --redraw first")
    summary = json.loads(path.read_text())
    plot_generic_adam(summary, out / "generic_adam")
    return summary


def _edges(values: list[float]) -> list[float]:
    """Cell edges halfway between grid values, so non-uniform grids draw as touching cells."""
    mids = [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]
    first, last = values[0] - (mids[0] - values[0]), values[-1] + (values[-1] - mids[-1])
    return [max(first, 0.0), *mids, last]


def plot_generic_adam(summary: dict[str, Any], stem: Path) -> None:
    """Final iterate and average regret per (s, r) cell; hatched cells are inside the
    theory's region, the line is its boundary. Drawn from the JSON summary alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    rs, ss = summary["grid"]["r"], summary["grid"]["s"]
    problems = list(summary["configs"])
    fig, axes = plt.subplots(len(problems), 2, figsize=(11, 4.6 * len(problems)),
                             constrained_layout=True, squeeze=False)  # fmt: skip
    for row, problem in enumerate(problems):
        cell = {(p["r"], p["s"]): p for p in summary["points"] if p["problem"] == problem}
        for col, key in enumerate(("final_x", "avg_regret")):
            values = np.array([[cell[(r, s)][key] for s in ss] for r in rs])
            ax = axes[row, col]
            if key == "final_x":
                mesh = ax.pcolormesh(
                    _edges(ss), _edges(rs), values, cmap="RdYlGn_r", vmin=-1, vmax=1
                )
                label, title = r"final iterate $x_T$ (optimum $x^* = -1$)", "final iterate"
            else:
                norm = LogNorm(vmin=max(values.min(), 1e-3), vmax=max(values.max(), 2e-3))
                mesh = ax.pcolormesh(_edges(ss), _edges(rs), values, cmap="viridis_r", norm=norm)
                label, title = r"average regret $R_T / T$", "average regret"
            fig.colorbar(mesh, ax=ax, label=label)
            for i, r in enumerate(rs):
                for j, s in enumerate(ss):
                    ax.text(s, r, f"{values[i, j]:+.2f}" if key == "final_x" else f"{values[i, j]:.2g}",
                            ha="center", va="center", fontsize=6.5)  # fmt: skip
            _draw_region(ax, ss, rs, first=(row == 0 and col == 0))
            rounds = summary["rounds"][problem]
            ax.set(xlabel=r"$s$ in $\alpha_t = \alpha / t^{s}$",
                   ylabel=r"$r$ in $\beta_{2,t} = 1 - \theta / t^{r}$",
                   title=f"{problem} problem, $T$ = {rounds:,} rounds: {title}")  # fmt: skip
            ax.set_xticks(ss, [f"{s:g}" for s in ss], fontsize=7)
            ax.set_yticks(rs, [f"{r:g}" for r in rs], fontsize=7)
    fig.suptitle(r"Generic Adam on the counterexample of Reddi et al.: the theory's region "
                 r"$0 < r \leq 2s < 2$ (hatched) against where the iterate ends")  # fmt: skip
    fig.legend(loc="lower center", bbox_to_anchor=(0.5, -0.03), ncol=2, fontsize=8)
    figure_style.save_figure(fig, stem)


def _draw_region(ax: Any, ss: list[float], rs: list[float], first: bool) -> None:
    """Hatch the cells inside 0 < r <= 2s < 2 and draw the boundary r = 2s, s = 1."""
    import numpy as np
    from matplotlib.patches import Rectangle

    s_edges, r_edges = _edges(ss), _edges(rs)
    for i, r in enumerate(rs):
        for j, s in enumerate(ss):
            if in_region(r, s):
                ax.add_patch(Rectangle(
                    (s_edges[j], r_edges[i]), s_edges[j + 1] - s_edges[j], r_edges[i + 1] - r_edges[i],
                    fill=False, hatch="///", edgecolor="0.25", lw=0,
                    label="cell inside the region" if first and not ax.patches else None,
                ))  # fmt: skip
    s_line = np.linspace(s_edges[0], min(1.0, s_edges[-1]), 100)
    r_line = np.minimum(2 * s_line, r_edges[-1])
    ax.plot(s_line, r_line, color="black", lw=1.8,
            label=r"boundary: $r = 2s$ and $s = 1$" if first else None)  # fmt: skip
    if s_edges[0] < 1.0 < s_edges[-1]:
        ax.plot([1.0, 1.0], [r_edges[0], min(2.0, r_edges[-1])], color="black", lw=1.8)
    ax.set_xlim(s_edges[0], s_edges[-1])
    ax.set_ylim(r_edges[0], r_edges[-1])


# ------------------------------------------------------------------- the subcommand
COMMAND = "generic_adam"


def add_parser(commands: Any) -> None:
    """``python -m lit_amsgrad.reproduce generic_adam``."""
    parser = commands.add_parser(COMMAND, help="Generic Adam's (r, s) region on the counterexample")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for generic_adam.json/.png/.pdf"
    )
    parser.add_argument("--quick", action="store_true", help="the small grid of the tests")
    parser.add_argument("--redraw", action="store_true",
                        help="draw DIR/generic_adam.json again, no training")  # fmt: skip


def run(args: Any) -> None:
    """Run the grid and print one line per cell; bad input is one ``error:`` line."""
    from lit_amsgrad.errors import ConfigError

    try:
        summary = redraw(args.out) if args.redraw else generic_adam(args.out, args.quick)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    for p in summary["points"]:
        where = "in region " if p["in_region"] else "outside   "
        print(f"{p['problem']:10s} r={p['r']:<6g} s={p['s']:<6g} {where} final x {p['final_x']:+.3f}"
              f"  avg regret {p['avg_regret']:.4f}")  # fmt: skip
    print(
        f"wrote {args.out / 'generic_adam.json'}, .png and .pdf ({summary.get('wall_time_s')} s of fits)"
    )
