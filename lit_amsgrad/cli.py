"""The LightningCLI behind ``train.py``.

What it adds to LightningCLI, and why:
- a bare config name (``--config cifarnet_amsgrad.yaml``) resolves to ``configs/``, so the
  README's commands work from any directory;
- every run gets its own folder ``runs/<config name>/<timestamp>``: the W&B files, the
  checkpoints and the saved ``config.yaml`` go there, never into the working directory, so
  running the same command twice works;
- the default logger is W&B, offline when there are no credentials (sync later with
  ``wandb sync``);
- a rich progress bar and model summary unless the config brings its own.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import (
    Callback,
    ModelSummary,
    ProgressBar,
    RichModelSummary,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningCLI

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_LOGGER = "lit_amsgrad.loggers.RunWandbLogger"


class ConfigNotFoundError(FileNotFoundError):
    """A ``--config`` that is neither a file nor the name of one in ``configs/``."""


def resolve_config(name: str) -> str:
    """Return ``name`` if it is a file, else ``configs/<name>`` (``.yaml`` optional)."""
    if Path(name).is_file():
        return name
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    available = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigNotFoundError(
        f"config {name!r} not found: it is neither a file nor in {CONFIG_DIR}. "
        f"Available configs: {available}"
    )


def resolve_config_args(argv: Sequence[str]) -> list[str]:
    """Rewrite every ``--config X`` / ``--config=X`` / ``-c X`` so that X is a path."""
    out: list[str] = []
    expect_config = False
    for arg in argv:
        if expect_config:
            out.append(resolve_config(arg))
            expect_config = False
        elif arg in ("--config", "-c"):
            out.append(arg)
            expect_config = True
        elif arg.startswith("--config="):
            out.append("--config=" + resolve_config(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


def _config_stem(argv: Sequence[str]) -> str:
    """The name of the last config file given, for the run folder; 'run' without one."""
    stem = "run"
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            stem = Path(argv[i + 1]).stem
        elif arg.startswith("--config="):
            stem = Path(arg.split("=", 1)[1]).stem
    return stem


class AMSGradCLI(LightningCLI):
    """LightningCLI with run folders, W&B (offline without credentials) and rich output."""

    def __init__(self, *args: Any, run_name: str = "run", **kwargs: Any) -> None:
        self.run_name = run_name
        kwargs.setdefault("model_class", LightningModule)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.set_defaults({"trainer.logger": {"class_path": DEFAULT_LOGGER}})

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config["trainer"]
        if trainer.get("default_root_dir") is None:
            trainer["default_root_dir"] = str(new_run_dir(self.run_name))
        logger = trainer.get("logger")
        if _is_run_logger(logger):
            init_args = logger.get("init_args")
            if init_args is not None and init_args.get("save_dir") is None:
                init_args["save_dir"] = trainer["default_root_dir"]
            if init_args is not None and init_args.get("name") is None:
                init_args["name"] = self.run_name

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        configured = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            callbacks = [*callbacks, RichProgressBar()]
        if config.get("enable_model_summary", True) is not False and not any(
            isinstance(c, ModelSummary) for c in configured
        ):
            callbacks = [*callbacks, RichModelSummary()]
        return super()._instantiate_trainer(config, callbacks)


RUN_DIR_ENV = "LIT_AMSGRAD_RUN_DIR"


def new_run_dir(run_name: str) -> Path:
    """``runs/<run_name>/<timestamp>``, unique; the same folder in every DDP process.

    Lightning's DDP launcher starts the other ranks as child processes with this process's
    environment, so the folder chosen here travels to them through ``LIT_AMSGRAD_RUN_DIR``
    (tagged with this process's id, so that only its children reuse it). Under torchrun or
    SLURM, where no rank is another's parent, pass ``--trainer.default_root_dir``.
    """
    parent_pid, _, inherited = os.environ.get(RUN_DIR_ENV, "").partition(":")
    if inherited and parent_pid == str(os.getppid()):
        return Path(inherited)
    base = DEFAULT_RUNS_DIR / run_name / time.strftime("%Y%m%d-%H%M%S")
    run_dir, suffix = base, 1
    while run_dir.exists():
        run_dir, suffix = base.with_name(f"{base.name}-{suffix}"), suffix + 1
    run_dir.mkdir(parents=True)
    os.environ[RUN_DIR_ENV] = f"{os.getpid()}:{run_dir}"
    return run_dir


def _is_run_logger(logger: Any) -> bool:
    return bool(
        logger is not None
        and not isinstance(logger, (bool, list))
        and hasattr(logger, "get")
        and logger.get("class_path") == DEFAULT_LOGGER
    )


def main(argv: Sequence[str] | None = None) -> AMSGradCLI:
    """Entry point of ``train.py``: ``python train.py fit --config NAME.yaml``."""
    from_command_line = argv is None
    try:
        resolved = resolve_config_args(sys.argv[1:] if argv is None else argv)
    except ConfigNotFoundError as err:
        sys.exit(f"error: {err}")
    os.environ.setdefault("WANDB_SILENT", "true")
    if from_command_line:  # LightningCLI reads sys.argv itself; hand it the resolved paths
        sys.argv[1:] = resolved
        return AMSGradCLI(run_name=_config_stem(resolved))
    return AMSGradCLI(args=resolved, run_name=_config_stem(resolved))
