"""Rerun the paper's figures and the follow-up experiments, and draw them.

    python -m lit_amsgrad.reproduce figure1 --out DIR
    python -m lit_amsgrad.reproduce figure2 --task mnist_logreg --out DIR [--seeds 5]
    python -m lit_amsgrad.reproduce generic_adam --out DIR
    python -m lit_amsgrad.reproduce scaling --out DIR

Each command is one module (``reproduce_figure1``, ``reproduce_figure2``,
``reproduce_generic_adam``, ``reproduce_scaling``) with ``COMMAND``, ``add_parser`` and ``run``.
Every run goes through the same code as ``train.py`` (the project's LightningCLI and configs);
which optimizers and tasks run, their legend labels, colours and line styles come from
``lit_amsgrad.registry``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence


def config_args(name: str) -> list[str]:
    """``--config <file>`` for every file that the config name ``name`` stands for."""
    from lit_amsgrad.cli import resolve_config

    return [arg for path in resolve_config(name) for arg in ("--config", path)]


def quiet_lightning() -> None:
    """One progress display, not a banner per run."""
    from lit_amsgrad.quiet import quiet_for_repeated_runs

    quiet_for_repeated_runs()


def main(argv: Sequence[str] | None = None) -> None:
    from lit_amsgrad import (
        reproduce_figure1,
        reproduce_figure2,
        reproduce_generic_adam,
        reproduce_scaling,
    )

    parser = argparse.ArgumentParser(
        prog="python -m lit_amsgrad.reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    modules = (reproduce_figure1, reproduce_figure2, reproduce_generic_adam, reproduce_scaling)
    experiments = {m.COMMAND: m for m in modules}
    for module in experiments.values():
        module.add_parser(commands)
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    from lit_amsgrad.cli import user_errors

    try:
        experiments[args.command].run(args)
    except user_errors() as err:  # bad input or unusable data: one line, as train.py's
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
