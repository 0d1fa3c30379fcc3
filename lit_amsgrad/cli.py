"""The LightningCLI behind ``train.py``.

What it adds to LightningCLI, and why:
- a bare config name (``--config cifarnet_amsgrad.yaml``) resolves to ``configs/``, so the
  README's commands work from any directory; a ``<task>_<optimizer>`` name stands for the
  task fragment ``configs/tasks/<task>.yaml`` and the optimizer fragment
  ``configs/optimizers/<optimizer>.yaml``, merged as two ``--config`` arguments;
- every run gets its own folder ``runs/<config name>/<timestamp>``: the W&B files, the
  checkpoints and the saved ``config.yaml`` go there, never into the working directory, so
  running the same command twice works;
- the default logger is W&B, offline when there are no credentials (sync later with
  ``wandb sync``);
- a rich progress bar and model summary unless the config brings its own;
- the callbacks' per-batch hooks that are ``Callback``'s no-ops are skipped, not dispatched
  (``lit_amsgrad.hook_dispatch``: ~10-30 us per callback and step otherwise).
"""

from __future__ import annotations

import os
import sys
import time
from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import (
    Callback,
    ModelCheckpoint,
    ModelSummary,
    ProgressBar,
    RichModelSummary,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_amsgrad import early_sigterm
from lit_amsgrad.checkpoint_io import AtomicCheckpointIO, verify_checkpoint
from lit_amsgrad.checkpointing import InterruptionCheckpoint
from lit_amsgrad.config_files import (  # noqa: F401 - re-exported: cli.resolve_config & co.
    CONFIG_DIR,
    OPTIMIZER_DIR,
    OVERRIDE_DIR,
    REPO_ROOT,
    TASK_DIR,
    ConfigNotFoundError,
    available_configs,
    check_yaml,
    compose_config_names,
    config_stem,
    load_config,
    resolve_config,
    resolve_config_args,
)
from lit_amsgrad.errors import ConfigError, condense_parse_error
from lit_amsgrad.fit_summary import fit_summary
from lit_amsgrad.hook_dispatch import skip_noop_hooks
from lit_amsgrad.last_step import LogTheLastStep
from lit_amsgrad.quiet import silence_known_harmless
from lit_amsgrad.report import fit_end_message
from lit_amsgrad.resume import newest_intact, refuse_changed_settings
from lit_amsgrad.run_record import RecordedConfigCallback, refuse_replaced_precision

DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_LOGGER = "lit_amsgrad.loggers.RunWandbLogger"
DEFAULT_DDP_TIMEOUT_S = 600  # longer than rank 0's slowest lone work (a CIFAR-10 download)


class CheckpointNotFoundError(FileNotFoundError):
    """``--ckpt_path best|last`` with no earlier run of this config that saved one."""


class CollectiveTimeoutError(RuntimeError):
    """Under DDP, a rank waited past ``--ddp_timeout_s`` for the others."""


class CheckpointMismatchError(ConfigError):
    """``--ckpt_path`` to a file that is not a checkpoint, or a checkpoint of another model."""


class AMSGradCLI(LightningCLI):
    """LightningCLI with run folders, W&B (offline without credentials) and rich output."""

    def __init__(
        self, *args: Any, run_name: str = "run", announce: bool = False, **kwargs: Any
    ) -> None:
        self.run_name = run_name
        self.announce = announce  # print the result line and the run folder after a fit
        kwargs.setdefault("model_class", LightningModule)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_callback", RecordedConfigCallback)  # W&B gets it too
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("parser_kwargs", {"exit_on_error": False})  # main() prints one line
        # no top-level --optimizer/--lr_scheduler: the model's own optimizer is what trains
        # and what is recorded (they trained SGD while the config said AMSGrad)
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        # imported here so that `fit --help` lists this project's models, data modules,
        # callbacks and optimizers among the known subclasses (a config imports them anyway)
        import callbacks  # noqa: F401
        import datamodules  # noqa: F401
        import lit_amsgrad.models  # noqa: F401
        import lit_amsgrad.optim  # noqa: F401

        parser.set_defaults({"trainer.logger": {"class_path": DEFAULT_LOGGER}})
        parser.add_argument(
            "--diag_every",
            type=int | None,
            default=None,
            help="log the optimizer diagnostics every N optimizer steps (sets "
            "log_every_n_steps of every OptimizerDiagnostics callback of the config)",
        )
        parser.add_argument(
            "--ddp_timeout_s",
            type=int,
            default=DEFAULT_DDP_TIMEOUT_S,
            help="under DDP, a rank that waits this long for the others (one stuck or dead) "
            "ends the job with an error (torch's default: 30 minutes)",
        )
        parser.add_argument(
            "--untrained",
            type=bool,
            default=False,
            help="test/validate/predict the initial weights on purpose (without it, scoring "
            "without --ckpt_path is refused)",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config["trainer"]
        set_diagnostics_cadence(trainer, config.get("diag_every"))
        ckpt_path = config.get("ckpt_path")
        resumed_run = None
        if (
            ckpt_path not in (None, "best", "last", "hpc", "registry")
            and not Path(ckpt_path).is_file()
        ):
            raise CheckpointNotFoundError(f"--ckpt_path {ckpt_path}: no such file")
        if ckpt_path in ("best", "last"):
            # Lightning knows "best"/"last" only inside the process that fitted; a new run
            # finds them in the newest earlier run folder of the same config.
            checkpoint, resumed_run = find_previous_checkpoint(self.run_name, ckpt_path)
            config["ckpt_path"] = ckpt_path = str(checkpoint)
        scoring = self.subcommand in ("test", "validate", "predict")
        if config.get("untrained") and (not scoring or ckpt_path is not None):
            raise ConfigError("--untrained is for test/validate/predict without --ckpt_path")
        if ckpt_path is None and scoring and not config.get("untrained"):
            raise ConfigError(
                f"{self.subcommand} without --ckpt_path would score untrained weights: pass "
                "--ckpt_path best, last or a .ckpt file (or --untrained to score the initial "
                "weights on purpose)"
            )
        if ckpt_path not in (None, "hpc", "registry"):
            resumed_run = resumed_run or run_of_checkpoint(Path(ckpt_path))
            check_resume_settings(
                ckpt_path, config, ("model", "data") if self.subcommand == "fit" else ("model",)
            )
        elif self.subcommand == "fit" and trainer.get("default_root_dir") is not None:
            refuse_fresh_fit_over_a_run(Path(trainer["default_root_dir"]))
        if trainer.get("default_root_dir") is None:
            if self.subcommand == "fit" and resumed_run is not None:
                trainer["default_root_dir"] = str(resumed_run)  # resume where it stopped
            else:
                trainer["default_root_dir"] = str(new_run_dir(self.run_name))
        if self.subcommand == "fit":
            lock_run_dir(Path(trainer["default_root_dir"]))
        logger = trainer.get("logger")
        init_args = logger.get("init_args") if _is_run_logger(logger) else None
        if init_args is not None:
            if init_args.get("save_dir") is None:
                init_args["save_dir"] = trainer["default_root_dir"]
            if init_args.get("name") is None:
                init_args["name"] = self.run_name
            # a resumed fit continues its W&B run; test/validate of a checkpoint log into
            # the run that trained it (in a folder of their own, keeping its config.yaml)
            run_id = wandb_run_id(resumed_run) if resumed_run is not None else None
            if init_args.get("id") is None and run_id:
                init_args["id"] = run_id
                init_args["resume"] = "allow"

    def _parse_ckpt_path(self) -> None:
        """LightningCLI merges the checkpoint's hyperparameters over the command line's here;
        this CLI compares them instead (``check_resume_settings``) and refuses a difference."""

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:
            if isinstance(err, ConfigError) or "Does not validate against" in str(err):
                raise ConfigError(condense_parse_error(str(err))) from None
            raise

    def _run_subcommand(self, subcommand: str) -> None:
        config = self.config[subcommand] if subcommand else self.config
        if config.get("ckpt_path"):
            check_checkpoint_fits(config["ckpt_path"], self.model)
        early_sigterm.restore_default()  # Lightning's handler from here on
        try:
            super()._run_subcommand(subcommand)
        except BaseException as error:
            interrupted = isinstance(error, SIGTERMException) or (
                isinstance(error, SystemExit) and error.code == early_sigterm.EXIT_CODE
            )
            _finish_wandb(exit_code=early_sigterm.EXIT_CODE if interrupted else 1)
            if is_collective_timeout(error):
                raise CollectiveTimeoutError(
                    collective_timeout_message(config.get("ddp_timeout_s", DEFAULT_DDP_TIMEOUT_S))
                ) from None
            raise
        _finish_wandb(exit_code=0)
        if subcommand == "fit" and self.announce and self.trainer.is_global_zero:
            print(fit_summary(self.trainer, self.model))
            print(fit_end_message(self.trainer.default_root_dir, self.trainer.loggers))

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
        dirpath = Path(config["default_root_dir"]) / "checkpoints"
        for callback in configured:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                # Lightning's default is <logger save_dir>/<name>/<version>/checkpoints:
                # runs/<config>/<time>/lit_amsgrad/<W&B id>/checkpoints, not the run's own
                callback.dirpath = str(dirpath.resolve())
        if self.subcommand == "fit" and config.get("enable_checkpointing", True) is not False:
            callbacks = [*callbacks, InterruptionCheckpoint(str(dirpath))]
        if self.subcommand == "fit":
            callbacks = [*callbacks, LogTheLastStep()]
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            config = {**config, "plugins": [*plugins, AtomicCheckpointIO()]}
        trainer = super()._instantiate_trainer(config, callbacks)
        skip_noop_hooks(trainer.callbacks)
        refuse_replaced_precision(config.get("precision"), trainer)
        run_config = self.config[self.subcommand] if self.subcommand else self.config
        set_ddp_timeout(trainer, run_config.get("ddp_timeout_s", DEFAULT_DDP_TIMEOUT_S))
        return trainer


RUN_DIR_ENV = "LIT_AMSGRAD_RUN_DIR"


def user_errors() -> tuple[type[Exception], ...]:
    """Errors whose message is the whole story: printed as one line, no traceback."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from callbacks import NonFiniteError
    from datamodules.vision import DatasetNotFoundError

    # Lightning's MisconfigurationException is its bad-input error: its message says it all
    return (
        CheckpointNotFoundError,
        CollectiveTimeoutError,
        DatasetNotFoundError,
        ConfigError,
        NonFiniteError,
        MisconfigurationException,
    )


def new_run_dir(run_name: str) -> Path:
    """``runs/<run_name>/<timestamp>``, unique; the same folder in every DDP process.

    Lightning's DDP launcher starts the other ranks as child processes with this process's
    environment, so the folder chosen here travels to them through ``LIT_AMSGRAD_RUN_DIR``
    (tagged with this process's id, so that only its children reuse it). Under torchrun or
    SLURM, where no rank is another's parent, pass ``--trainer.default_root_dir``.
    """
    parent_pid, _, inherited = os.environ.get(RUN_DIR_ENV, "").partition(":")
    is_ddp_child = os.environ.get("LOCAL_RANK", "0") != "0"  # set by Lightning's launcher
    if inherited and is_ddp_child and parent_pid == str(os.getppid()):
        return Path(inherited)
    base = DEFAULT_RUNS_DIR / run_name / time.strftime("%Y%m%d-%H%M%S")
    run_dir, suffix = base, 1
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        while True:  # mkdir is the atomic test: two starts in one second get two folders
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                run_dir, suffix = base.with_name(f"{base.name}-{suffix}"), suffix + 1
    except OSError as err:
        raise ConfigError(
            f"cannot create the run folder {run_dir} ({err.strerror or err}): run from a "
            "writable folder or pass --trainer.default_root_dir"
        ) from None
    os.environ[RUN_DIR_ENV] = f"{os.getpid()}:{run_dir}"
    return run_dir


#: the open lock file of the run folder this process writes into (released when it ends)
_RUN_LOCK: list[Any] = []


def lock_run_dir(run_dir: Path) -> None:
    """Refuse a second process writing into the same run folder (two resumes of one run).

    An advisory ``flock`` on ``<run>/.lock``, held until this process ends or ``main``
    returns; DDP ranks other than the launching one do not take it."""
    import fcntl

    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0":
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / ".lock", "a+")  # noqa: SIM115 - held open on purpose
    except OSError as err:
        raise ConfigError(
            f"run folder {run_dir} is not writable ({err.strerror or err}): a fit writes its "
            "checkpoints, logs and config.yaml there; make it writable or fit into another "
            "folder (--trainer.default_root_dir)"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(
            f"run folder {run_dir} is in use by {owner}: wait for it to end, or fit into a "
            "new folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()}")
    handle.flush()
    _RUN_LOCK.append(handle)


def release_run_lock() -> None:
    while _RUN_LOCK:
        _RUN_LOCK.pop().close()


def find_previous_checkpoint(run_name: str, which: str) -> tuple[Path, Path]:
    """(checkpoint, run folder) for ``which`` = "last" or "best" of the newest earlier run.

    "best" is read from the ModelCheckpoint state saved in that run's ``last.ckpt``.
    """
    runs_root = DEFAULT_RUNS_DIR / run_name
    runs = sorted((p for p in runs_root.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for run in reversed(runs):
        lasts = sorted(run.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not lasts:
            continue
        if which == "last":
            intact, refused = newest_intact(lasts)
            for path, why in refused:
                print(f"note: skipping {path}: {why.split(';')[0]}", file=sys.stderr)
            if intact is None:
                continue
            if refused:
                print(
                    f"note: resuming from {intact}, the newest intact checkpoint", file=sys.stderr
                )
            return intact, run
        import torch

        state = torch.load(lasts[-1], map_location="cpu", weights_only=False)
        for key, callback_state in state.get("callbacks", {}).items():
            best = (
                callback_state.get("best_model_path") if isinstance(callback_state, dict) else None
            )
            if key.startswith("ModelCheckpoint") and best and Path(best).is_file():
                return Path(best), run
    raise CheckpointNotFoundError(
        f"--ckpt_path {which}: no earlier run of {run_name!r} under {runs_root} saved a "
        f"{'last.ckpt' if which == 'last' else 'best checkpoint (ModelCheckpoint with save_last)'}"
        "; pass the checkpoint file's path instead"
    )


def set_diagnostics_cadence(trainer: Any, every: int | None) -> None:
    """``--diag_every N``: log_every_n_steps of every OptimizerDiagnostics in the config
    (``--trainer.callbacks.log_every_n_steps`` would land on the config's last callback)."""
    if every is None:
        return
    if isinstance(every, bool) or every < 1:
        raise ConfigError(f"--diag_every must be an integer >= 1, got {every!r}")
    callbacks = trainer.get("callbacks") or []
    found = False
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        if getattr(callback, "class_path", None) == "callbacks.OptimizerDiagnostics":
            callback.init_args.log_every_n_steps = every
            found = True
    if not found:
        raise ConfigError("--diag_every: this config has no callbacks.OptimizerDiagnostics")


def set_ddp_timeout(trainer: Trainer, seconds: int) -> None:
    """The process-group timeout of a DDP trainer (any way DDP was chosen: a strategy name,
    ``auto`` on several devices, or a ``DDPStrategy`` of the config left at torch's default).

    A collective that waits longer than this raises in the waiting ranks, so a stuck or dead
    rank ends the job in minutes instead of torch's half hour."""
    from datetime import timedelta

    from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
    from lightning.pytorch.strategies import DDPStrategy

    if isinstance(seconds, bool) or seconds < 1:
        raise ConfigError(f"--ddp_timeout_s must be an integer >= 1 (seconds), got {seconds!r}")
    strategy = trainer.strategy
    # DDPStrategy keeps its timeout in `_timeout` until it creates the process group in fit
    if isinstance(strategy, DDPStrategy) and strategy._timeout == default_pg_timeout:
        strategy._timeout = timedelta(seconds=seconds)


def load_lightning_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint at ``path`` (memory-mapped), or one line saying why it is not one."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # a truncated or foreign file fails in many ways
        raise CheckpointMismatchError(
            f"--ckpt_path {path} is not a readable checkpoint ({type(err).__name__}); "
            "pass a .ckpt file saved by this project"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointMismatchError(f"--ckpt_path {path} is not a Lightning checkpoint")
    return checkpoint


def check_resume_settings(path: str, config: Any, sections: tuple[str, ...]) -> None:
    """One line instead of a silent mix: the file is whole, and it trained these settings."""
    verify_checkpoint(path)
    refuse_changed_settings(path, load_lightning_checkpoint(path), config, sections)


def refuse_fresh_fit_over_a_run(root: Path) -> None:
    """A fit without --ckpt_path into a folder that holds a run's checkpoints: refused,
    rather than mixing two runs' checkpoints, logs and W&B run in one folder."""
    earlier = sorted((root / "checkpoints").glob("*.ckpt"))
    if earlier:
        raise ConfigError(
            f"--trainer.default_root_dir {root} holds the checkpoints of an earlier run "
            f"({earlier[0].name}, ...): resume it with --ckpt_path last, or fit into a new folder"
        )


def check_checkpoint_fits(path: str, model: LightningModule) -> None:
    """Fail in one line before training when ``path`` cannot be loaded into ``model``."""
    checkpoint = load_lightning_checkpoint(path)
    saved = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if saved != wanted:
        missing = sorted(set(wanted) - set(saved))
        extra = sorted(set(saved) - set(wanted))
        shapes = sorted(k for k in set(saved) & set(wanted) if saved[k] != wanted[k])
        raise CheckpointMismatchError(
            f"--ckpt_path {path} is a checkpoint of another model than "
            f"{type(model).__name__}: missing {missing[:3]}, unexpected {extra[:3]}, "
            f"other shapes {shapes[:3]}"
        )


def run_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run folder that wrote ``checkpoint`` (``<run>/checkpoints/x.ckpt``), if it is one."""
    folder = checkpoint.resolve().parent
    run = folder.parent
    if folder.name == "checkpoints" and (run / "wandb").is_dir():
        return run
    return None


def wandb_run_id(run_dir: Path) -> str | None:
    """The id of the W&B run that logged into ``run_dir`` before, if any."""
    runs = sorted((run_dir / "wandb").glob("*run-*-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def _finish_wandb(exit_code: int = 0) -> None:
    """Close the W&B run so that its offline files are complete and a next run is new; a
    run that ended in an error, a stop or SIGTERM is recorded as failed (its exit code)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


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
    except (ConfigNotFoundError, ConfigError) as err:
        if argv is not None and isinstance(err, ConfigError):
            raise
        sys.exit(f"error: {err}")
    os.environ.setdefault("WANDB_SILENT", "true")
    silence_known_harmless()
    try:
        return _run_cli(resolved, from_command_line)
    finally:
        release_run_lock()
        if os.environ.get(RUN_DIR_ENV, "").startswith(f"{os.getpid()}:"):
            del os.environ[RUN_DIR_ENV]  # this run's folder is not for later runs


def _run_cli(resolved: list[str], from_command_line: bool) -> AMSGradCLI:
    try:
        if from_command_line:  # LightningCLI reads sys.argv itself; hand it the resolved paths
            sys.argv[1:] = resolved
            return AMSGradCLI(run_name=config_stem(resolved), announce=True)
        return AMSGradCLI(args=resolved, run_name=config_stem(resolved))
    except user_errors() as err:
        if not from_command_line:
            raise
        sys.exit(f"error: {err}")
    except ArgumentError as err:
        if not from_command_line:
            raise
        sys.exit(f"error: {condense_parse_error(str(err))} (see: train.py fit --help)")
    except SIGTERMException:
        if not from_command_line:
            raise
        sys.exit(early_sigterm.EXIT_CODE)


def is_collective_timeout(err: BaseException) -> bool:
    """A DDP collective that waited past the process-group timeout (gloo or NCCL)."""
    import torch.distributed as dist

    text = str(err).lower()
    return (
        isinstance(err, RuntimeError)
        and dist.is_available()
        and dist.is_initialized()
        and ("timed out" in text or "timeout" in text)
    )


def collective_timeout_message(seconds: int) -> str:
    import torch.distributed as dist

    return (
        f"DDP rank {dist.get_rank()} of {dist.get_world_size()} waited "
        f"{seconds} s for the other processes (--ddp_timeout_s): one is stuck "
        "or dead; the checkpoints up to the last periodic one are intact (resume with "
        "--ckpt_path last), end any process of this run that is left"
    )
