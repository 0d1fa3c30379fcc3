"""Which optimizers and tasks the figures run, and how they are drawn: one line each.

An optimizer here is the name of its config fragment ``configs/optimizers/<name>.yaml``
(its ``class_path`` and its own settings); a task is the name of its fragment
``configs/tasks/<task>.yaml`` (model, data, trainer and the task's optimizer settings: lr,
betas, schedule, bounds). Every figure run is ``--config <task>_<name>.yaml``, i.e. those two
fragments merged (plus ``configs/overrides/<task>_<name>.yaml`` where one pair needs a
setting of its own; see ``lit_amsgrad.cli.resolve_config``).

A new optimizer in both figures: write its fragment and add one ``Entry`` to ``OPTIMIZERS``.
``python -m lit_amsgrad.reproduce`` (its defaults and ``--optimizers`` choices), the figures'
legends and colours and ``tests/test_sweeps.py`` read this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FIGURE1, FIGURE2 = "figure1", "figure2"


@dataclass(frozen=True)
class Entry:
    """One optimizer: its fragment's name, its legend label (the paper's name), how its
    curves are drawn, its figures. Line styles and markers differ between optimizers so that
    curves lying on top of each other stay visible (``lit_amsgrad.figure_style``)."""

    name: str
    label: str
    color: str
    figures: tuple[str, ...]
    linestyle: str = "-"
    marker: str = "o"


OPTIMIZERS: tuple[Entry, ...] = (
    Entry("adam", "Adam", "tab:red", (FIGURE1, FIGURE2), "-", "o"),
    Entry("amsgrad", "AMSGrad", "tab:blue", (FIGURE1, FIGURE2), "--", "s"),
    Entry("adamnc", "AdamNC", "tab:green", (FIGURE1,), "-.", "^"),
    Entry("adashift", "AdaShift", "tab:purple", (FIGURE1,), ":", "D"),
)

# Figure 1: the counterexample's problem (SyntheticConvexModule's ``problem``) -> its task
FIGURE1_TASKS = {"online": "synthetic_online", "stochastic": "synthetic_stochastic"}
# Figure 2: the image tasks, each with a W&B sweep file configs/sweeps/<task>.yaml
FIGURE2_TASKS = ("mnist_logreg", "mnist_mlp", "cifarnet")
FIGURE2_TASK_LABELS = {
    "mnist_logreg": "MNIST, logistic regression",
    "mnist_mlp": "MNIST, MLP",
    "cifarnet": "CIFAR-10, CIFARNET",
}


def optimizers(figure: str) -> tuple[str, ...]:
    """The names of the optimizers ``figure`` runs by default, in registry order."""
    return tuple(entry.name for entry in OPTIMIZERS if figure in entry.figures)


def entry(name: str) -> Entry | None:
    """The registry line of ``name``; None for an optimizer that is not registered."""
    return next((e for e in OPTIMIZERS if e.name == name), None)


def label(name: str) -> str:
    found = entry(name)
    return found.label if found else name


def color(name: str) -> str | None:
    found = entry(name)
    return found.color if found else None


def fragment(name: str) -> Path:
    """``configs/optimizers/<name>.yaml``."""
    from lit_amsgrad.cli import OPTIMIZER_DIR

    return OPTIMIZER_DIR / f"{name}.yaml"


def class_path(name: str) -> str:
    """The optimizer class that ``name``'s fragment selects."""
    import yaml

    config = yaml.safe_load(fragment(name).read_text())
    return config["model"]["init_args"]["optimizer"]["class_path"]
