"""The default logger: W&B that runs offline when this machine has no W&B credentials.

It also makes the runs easy to read in a W&B workspace (``lit_amsgrad.dashboard``):
``diag*`` keys are plotted against the optimizer step the diagnostics log at
(``optimizer/step``), training keys against ``trainer/global_step``; a run's name says its
config, its optimizer and the settings changed from the config; its config holds
``config_name``, ``optimizer_name`` and ``task_name`` to group by, and its tags the seed.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

#: the x-axis of the diagnostics: the optimizer step they describe (with manual optimization,
#: as in the synthetic tasks, many optimizer steps per training step)
OPTIMIZER_STEP = "optimizer/step"
#: what the diagnostics' keys start with: diag/, diag_hist/, diag_opt1/, ...
DIAG_PREFIX = "diag"
#: keys whose change does not make another experiment
_NOT_SETTINGS = ("data_dir", "download", "num_workers", "default_root_dir", "logger")


def has_wandb_credentials() -> bool:
    """True when W&B could authenticate: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


@dataclass
class RunLabel:
    """What a run is, for its W&B name, config and tags."""

    config: str
    optimizer: str | None = None
    task: str | None = None
    seed: int | None = None
    changed: dict[str, Any] = field(default_factory=dict)
    #: the optimizer the config itself names (None: not a config of this repository)
    config_optimizer: str | None = None

    @property
    def name(self) -> str:
        """``<config> [<optimizer if not the config's>] key=value ...``."""
        parts = [self.config]
        if self.optimizer and self.optimizer != self.config_optimizer:
            parts.append(self.optimizer)
        parts += [f"{_short(key, self.changed)}={_fmt(v)}" for key, v in self.changed.items()]
        return " ".join(parts)

    @property
    def tags(self) -> list[str]:
        tags = [t for t in (self.task, self.optimizer) if t]
        return tags + ([f"seed={self.seed}"] if self.seed is not None else [])


def describe_run(config_name: str, run_config: Mapping[str, Any]) -> RunLabel:
    """Label a run by comparing its full config (the saved ``config.yaml``) with what
    ``--config config_name`` stands for: a changed key the config sets is named with its value
    (``lr=0.003``), a changed optimizer class by its name. Keys the config leaves at their
    defaults are not compared (their defaults are not in the files)."""
    from lit_amsgrad.cli import load_config

    try:
        base = load_config(config_name)
    except (FileNotFoundError, ValueError, OSError):
        base = {}
    actual, expected = _flatten(run_config), _flatten(base)
    changed = {
        key: actual[key]
        for key in expected
        if key in actual
        and not _same(actual[key], expected[key])
        and not key.endswith("class_path")
        and not any(part in _NOT_SETTINGS for part in key.split("."))
        and key != "seed_everything"
    }
    seed = run_config.get("seed_everything")
    return RunLabel(
        config=config_name,
        optimizer=_optimizer_of(run_config),
        task=_task_of(config_name),
        seed=int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None,
        changed=changed,
        config_optimizer=_optimizer_of(base),
    )


def _optimizer_of(config: Mapping[str, Any]) -> str | None:
    """The class name of ``model.init_args.optimizer.class_path``, if the config has one."""
    model = config.get("model") or {}
    optimizer = (
        (model.get("init_args") or {}).get("optimizer") if isinstance(model, Mapping) else None
    )
    class_path = optimizer.get("class_path") if isinstance(optimizer, Mapping) else None
    return str(class_path).rsplit(".", 1)[-1] if class_path else None


def _task_of(config_name: str) -> str | None:
    """The task fragment ``--config config_name`` merges (configs/tasks/<task>.yaml), if any."""
    from lit_amsgrad.cli import TASK_DIR, resolve_config

    try:
        files = resolve_config(config_name)
    except (FileNotFoundError, ValueError, OSError):
        return None
    tasks = [Path(f).stem for f in files if Path(f).parent.name == TASK_DIR.name]
    return tasks[0] if tasks else None


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of nested mappings (and of lists of mappings) under dotted keys."""
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, list) and any(isinstance(v, Mapping) for v in tree):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _short(key: str, changed: Mapping[str, Any]) -> str:
    """The last part of a dotted key, or the last two where the last part is not unique."""
    last = key.rsplit(".", 1)[-1]
    clashes = sum(k.rsplit(".", 1)[-1] == last for k in changed)
    return last if clashes == 1 else ".".join(key.split(".")[-2:])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(_fmt(v) for v in value)
    return str(value)


class RunWandbLogger(WandbLogger):
    """WandbLogger whose files go to the run folder and that goes offline by itself.

    ``offline=None`` (the default) means offline exactly when there are no credentials or
    ``WANDB_MODE`` says so; sync an offline run later with ``wandb sync <run dir>``.
    ``job_type`` defaults to ``sweep`` under a W&B agent and ``fit`` otherwise; ``group``,
    ``job_type`` and ``tags`` go to ``wandb.init`` (``lit_amsgrad.reproduce`` sets them for
    figure-2 grids).
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | None = None,
        project: str = "lit_amsgrad",
        offline: bool | None = None,
        id: str | None = None,
        log_model: bool = False,
        **kwargs: Any,
    ) -> None:
        if offline is None:
            mode = os.environ.get("WANDB_MODE", "")
            offline = mode in ("offline", "dryrun") or (
                mode != "online" and not has_wandb_credentials()
            )
        save_dir = str(save_dir if save_dir is not None else Path("runs"))
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        sweep = bool(os.environ.get("WANDB_SWEEP_ID"))
        kwargs.setdefault("job_type", "sweep" if sweep else "fit")
        if sweep:
            kwargs["tags"] = [*(kwargs.get("tags") or []), "sweep"]
        self._config_name = name
        self._defined: set[str] = set()
        super().__init__(
            name=name, save_dir=save_dir, project=project, offline=offline, id=id,
            log_model=log_model, **kwargs,
        )  # fmt: skip
        # absolute: W&B's service process outlives a run and resolves a relative folder
        # against its own working directory, not this process's current one
        self._wandb_init["dir"] = str(Path(save_dir).resolve())
        # Lightning passes anonymous=None, and wandb >= 0.19 warns on every run that the
        # setting has no effect: only a value given on purpose is passed on
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    @property
    def experiment(self) -> Any:
        run = super().experiment
        if not self._defined and callable(getattr(run, "define_metric", None)):
            self._defined.add(OPTIMIZER_STEP)
            run.define_metric(OPTIMIZER_STEP)
            for glob in (f"{DIAG_PREFIX}/*", f"{DIAG_PREFIX}_hist/*"):
                run.define_metric(glob, step_metric=OPTIMIZER_STEP)
        return run

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Diagnostics rows carry ``optimizer/step`` (not ``trainer/global_step``, which counts
        training steps); each new diag key is defined against it by name, as globs alone can
        lose to Lightning's catch-all ``*``."""
        if step is None or not any(k.startswith(DIAG_PREFIX) for k in metrics):
            super().log_metrics(metrics, step)
            return
        run = self.experiment
        for key in metrics:
            if key not in self._defined:
                self._defined.add(key)
                run.define_metric(key, step_metric=OPTIMIZER_STEP)
        run.log({**metrics, OPTIMIZER_STEP: step})

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """The hyperparameters, then the run's name, grouping keys and tags (see RunLabel):
        from the run's saved ``config.yaml``, or, where none is saved (``reproduce``), from
        the module's hyperparameters."""
        super().log_hyperparams(params)
        if not self._config_name:
            return
        saved = Path(self.save_dir or ".") / "config.yaml"
        if saved.is_file():
            import yaml

            run_config = yaml.safe_load(saved.read_text()) or {}
        else:
            from lightning.fabric.utilities.logger import _convert_params

            run_config = {"model": {"init_args": dict(self.experiment.config.as_dict())}}
            run_config["seed_everything"] = _seed(_convert_params(params))
        label = describe_run(self._config_name, run_config)
        run = self.experiment
        run.name = label.name
        run.config.update(
            {"config_name": label.config, "optimizer_name": label.optimizer,
             "task_name": label.task, "seed_everything": label.seed},
            allow_val_change=True,
        )  # fmt: skip
        run.tags = tuple(dict.fromkeys([*(run.tags or ()), *label.tags]))


def _seed(params: Mapping[str, Any]) -> int | None:
    """The run's seed: Lightning's ``seed_everything`` (PL_GLOBAL_SEED), else a ``seed`` hparam."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is not None and seed.lstrip("-").isdigit():
        return int(seed)
    value = params.get("seed")
    return value if isinstance(value, int) else None
