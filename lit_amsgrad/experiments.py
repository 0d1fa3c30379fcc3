"""The experiment files under ``configs/experiments/``: which configs a reproduction runs
and at which sizes (``full`` for the README's figures, ``quick`` for tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lit_amsgrad.errors import ConfigError

EXPERIMENT_DIR = Path(__file__).resolve().parents[1] / "configs" / "experiments"


def load_experiment(name: str, quick: bool) -> dict[str, Any]:
    """The ``full`` or ``quick`` sizes of ``configs/experiments/<name>.yaml``, merged over
    its shared keys (everything but ``full`` and ``quick``; a mapping merges key by key)."""
    import yaml

    path = EXPERIMENT_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"experiment file {path} is missing")
    spec = yaml.safe_load(path.read_text()) or {}
    size = "quick" if quick else "full"
    if size not in spec:
        raise ConfigError(f"{path} has no '{size}:' section")
    shared = {k: v for k, v in spec.items() if k not in ("full", "quick")}
    merged = dict(shared)
    for key, value in spec[size].items():
        both = isinstance(value, dict) and isinstance(shared.get(key), dict)
        merged[key] = {**shared[key], **value} if both else value
    return {**merged, "size": size}


def check_out(out: Path) -> None:
    """``--out`` must be a folder (made if missing), not a file."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def one_thread() -> None:
    """One intra-op thread per process: these models (a 1-D problem, a logistic regression)
    are far too small to gain from more, and on a few shared cores the thread pools of several
    processes spin against each other (measured on 2 cores under load: 180 ms against 9 ms
    per logistic-regression step)."""
    os.environ.update(ONE_THREAD)


def fit_quietly(args: list[str]) -> Any:
    """``train.py fit`` with ``args`` through the project's CLI (``lit_amsgrad.cli.main``),
    without a banner per run; returns the CLI (its trainer and model)."""
    import warnings

    import torch

    from lit_amsgrad.cli import main
    from lit_amsgrad.quiet import quiet_for_repeated_runs

    one_thread()
    torch.set_num_threads(1)

    with warnings.catch_warnings():
        quiet_for_repeated_runs()
        # the grid runs outside 0 < r <= 2s < 2 on purpose
        warnings.filterwarnings("ignore", message=".*GenericAdam converges when.*")
        return main(["fit", *args])


QUIET = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")
