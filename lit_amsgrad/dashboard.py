"""The project's W&B workspace as code, and a W&B report of a figure-2 grid.

    python -m lit_amsgrad.dashboard --entity E --project P                 # saves the workspace
    python -m lit_amsgrad.dashboard --entity E --project P --dry-run --out ws.json
    python -m lit_amsgrad.dashboard --entity E --project P --figure2-report mnist_logreg

Without it W&B shows every ``diag/*`` key, per parameter, in one alphabetical wall against
its own ``_step``. The workspace has a section for training, one for the diagnostics over all
coordinates (against ``optimizer/step``, see ``lit_amsgrad.loggers``), one of per-parameter
regex panels, the effective-step histograms, and runs grouped by config and optimizer.
``--dry-run`` only builds and serialises (no network, no credentials); ``save()`` needs
``wandb login``. The panel layout (``TRAINING``, ``DIAGNOSTICS``, ``PER_PARAMETER``) is
shared with ``lit_amsgrad.report``, which draws one run without W&B.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_amsgrad.loggers import OPTIMIZER_STEP

TRAINER_STEP = "trainer/global_step"


@dataclass(frozen=True)
class Panel:
    """One chart: its title, the keys it draws, against which step, on a log y axis or not."""

    title: str
    keys: tuple[str, ...]
    x: str = OPTIMIZER_STEP
    log_y: bool = False


TRAINING = (
    Panel("loss", ("train/loss", "val/loss"), TRAINER_STEP),
    Panel("accuracy", ("val/acc", "test/acc"), TRAINER_STEP),
    Panel("iterate x (optimum -1)", ("x",), TRAINER_STEP),
    Panel("average regret R_t/t", ("avg_regret",), TRAINER_STEP, log_y=True),
)
DIAGNOSTICS = (
    Panel(
        "effective step size",
        ("diag/eff_lr/min", "diag/eff_lr/median", "diag/eff_lr/max"),
        log_y=True,
    ),  # fmt: skip
    Panel("fraction of coordinates with Gamma_t < 0", ("diag/gamma_neg_frac",)),
    Panel("most negative Gamma_t", ("diag/gamma_min",)),
    Panel("fraction where vhat_t > v_t", ("diag/vhat_active_frac",)),
    Panel("max vhat_t", ("diag/vhat_max",), log_y=True),
    Panel("vhat growth since the last logging step", ("diag/vhat_growth",)),
    Panel("non-finite entries", ("diag/nonfinite",)),
)
#: per-parameter keys are ``<stat>/<parameter name>``; one regex panel per statistic
PER_PARAMETER = tuple(k for p in DIAGNOSTICS for k in p.keys if k != "diag/nonfinite")
HISTOGRAM_PREFIX = "diag_hist/eff_lr/"
GROUP_BY = ("config_name", "optimizer_name")  # config keys RunWandbLogger sets


def parameter_regex(key: str) -> str:
    """A regex for ``key``'s per-parameter keys: ``key/<any parameter name>``."""
    return f"^{key}/.+$"


def _line_plot(wr: Any, panel: Panel) -> Any:
    return wr.LinePlot(title=panel.title, x=panel.x, y=list(panel.keys), log_y=panel.log_y or None)


def _diagnostic_panels(wr: Any) -> list[Any]:
    return [_line_plot(wr, p) for p in DIAGNOSTICS]


def build_workspace(entity: str, project: str, name: str = "lit_amsgrad diagnostics") -> Any:
    """The workspace: training, diagnostics, per parameter, histograms; runs grouped by
    config and optimizer. Building it needs no network."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    per_parameter = [
        wr.LinePlot(title=f"{key} per parameter", x=OPTIMIZER_STEP, metric_regex=parameter_regex(key),
                    log_y=True if key.startswith("diag/eff_lr") or key == "diag/vhat_max" else None)
        for key in PER_PARAMETER
    ]  # fmt: skip
    # W&B draws a histogram key's history as a heatmap over steps
    histograms = [
        wr.LinePlot(title="effective step size histograms (log10)", x=OPTIMIZER_STEP,
                    metric_regex=f"^{HISTOGRAM_PREFIX}.+$")
    ]  # fmt: skip
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=[
            ws.Section(name="training", panels=[_line_plot(wr, p) for p in TRAINING], is_open=True),
            ws.Section(name="diagnostics", panels=_diagnostic_panels(wr), is_open=True),
            ws.Section(name="diagnostics per parameter", panels=per_parameter),
            ws.Section(name="histograms", panels=histograms),
        ],
        runset_settings=ws.RunsetSettings(groupby=[ws.Config(k) for k in GROUP_BY]),
    )


def build_figure2_report(entity: str, project: str, task: str, offline: bool = False) -> Any:
    """A report of one figure-2 grid: the runs of W&B group ``figure2_<task>`` (as
    ``lit_amsgrad.reproduce figure2`` logs them), grouped by optimizer, held-out loss and
    accuracy beside the diagnostics. ``offline``: the run set does not name its project, as
    wandb_workspaces looks the project's id up when a run set names one."""
    import wandb_workspaces.reports.v2 as wr

    group = f"figure2_{task}"
    where = {} if offline else {"entity": entity, "project": project}
    runset = wr.Runset(**where, name=group, filters=f"Group == '{group}'",
                       groupby=["config.optimizer_name"])  # fmt: skip
    training = [_line_plot(wr, p) for p in TRAINING[:2]]
    return wr.Report(
        entity=entity,
        project=project,
        title=f"Figure 2, {task}: Adam and AMSGrad over the grid",
        description="Reddi et al. (2018), Fig. 2: runs of python -m lit_amsgrad.reproduce figure2"
        f" --task {task}, grouped by optimizer.",
        blocks=[
            wr.H1(text=f"Figure 2: {task}"),
            wr.P(
                text=f"Runs of the W&B group {group}; each line is one grid point (alpha, beta_2)."
            ),
            wr.PanelGrid(runsets=[runset], panels=training),
            wr.H2(text="Why: the diagnostics"),
            wr.PanelGrid(runsets=[runset], panels=_diagnostic_panels(wr)),
        ],
    )


def definition(view: Any) -> dict[str, Any]:
    """The JSON W&B receives for a workspace or report (what ``save()`` sends)."""
    return json.loads(view._to_model().model_dump_json(by_alias=True, exclude_none=True))


def main(argv: Sequence[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(
        prog="python -m lit_amsgrad.dashboard",
        description="Build this project's W&B workspace (or a figure-2 report) and save it.",
    )
    parser.add_argument("--entity", required=True, help="W&B user or team")
    parser.add_argument("--project", default="lit_amsgrad", help="W&B project (lit_amsgrad)")
    parser.add_argument("--figure2-report", metavar="TASK",
                        help="write a report of the figure-2 grid of TASK instead")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="build and write, do not save")
    parser.add_argument("--out", type=Path, help="with --dry-run: write the definition here")
    args = parser.parse_args(argv)
    if args.out is not None and not args.dry_run:
        sys.exit("error: --out writes the definition of a --dry-run: add --dry-run, or drop "
                 "--out to save to W&B")  # fmt: skip
    if args.figure2_report is not None:
        from lit_amsgrad.registry import FIGURE2_TASKS

        if args.figure2_report not in FIGURE2_TASKS:
            sys.exit(f"error: --figure2-report {args.figure2_report!r}: "
                     f"allowed tasks are {', '.join(FIGURE2_TASKS)}")  # fmt: skip
        view = build_figure2_report(
            args.entity, args.project, args.figure2_report, offline=args.dry_run
        )
    else:
        view = build_workspace(args.entity, args.project)
    if args.dry_run:
        text = json.dumps(definition(view), indent=1)
        if args.out is None:
            print(text)
        else:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
            print(f"wrote {args.out} ({len(text)} bytes)")
        return view
    from lit_amsgrad.loggers import has_wandb_credentials

    if not has_wandb_credentials():
        sys.exit("error: no W&B credentials: run `wandb login` (or set WANDB_API_KEY), "
                 "or pass --dry-run --out FILE to write the definition only")  # fmt: skip
    try:
        view.save()
    except Exception as err:  # the API's errors come in many types; the message says it
        sys.exit(f"error: W&B refused to save to {args.entity}/{args.project}: {err}")
    print(getattr(view, "url", "saved"))
    return view


if __name__ == "__main__":
    main()
