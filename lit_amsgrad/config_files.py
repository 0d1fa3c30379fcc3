"""Config files by name: what ``--config NAME`` stands for, and which names exist.

No Lightning import here, so that ``train.py --help`` and the config tools start at once.
A bare name resolves to ``configs/``; ``<task>_<optimizer>`` stands for the task fragment
``configs/tasks/<task>.yaml`` and the optimizer fragment ``configs/optimizers/<optimizer>.yaml``
(plus ``configs/overrides/<task>_<optimizer>.yaml`` when there is one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lit_amsgrad.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
TASK_DIR = CONFIG_DIR / "tasks"  # one fragment per task: model, data, trainer, optimizer settings
OPTIMIZER_DIR = CONFIG_DIR / "optimizers"  # one fragment per optimizer (its class_path)
OVERRIDE_DIR = CONFIG_DIR / "overrides"  # <task>_<optimizer>.yaml: settings of one pair only


class ConfigNotFoundError(FileNotFoundError):
    """A ``--config`` that is neither a file nor the name of one in ``configs/``."""


def resolve_config(name: str) -> list[str]:
    """The config files that ``--config name`` stands for, in the order they merge.

    ``name`` itself if it is a file; else ``configs/<name>``, ``configs/tasks/<name>`` or
    ``configs/optimizers/<name>`` (``.yaml`` optional); else a composite name
    ``<task>_<optimizer>[.yaml]``: ``configs/tasks/<task>.yaml``, then
    ``configs/optimizers/<optimizer>.yaml``, then ``configs/overrides/<task>_<optimizer>.yaml``
    if there is one (settings of that pair only). LightningCLI merges them like several
    ``--config`` arguments: later files override earlier ones, and an optimizer
    ``class_path`` that changes keeps the ``init_args`` the new class accepts.
    """
    if Path(name).is_file():
        return [name]
    if Path(name).parent.resolve() == CONFIG_DIR.resolve():
        name = Path(name).name  # configs/cifarnet_amsgrad.yaml: the path of a composite name
    stem = name.removesuffix(".yaml")
    for folder in (CONFIG_DIR, TASK_DIR, OPTIMIZER_DIR):
        for candidate in (folder / name, folder / f"{stem}.yaml"):
            if candidate.is_file():
                return [str(candidate)]
    composed = compose_config_names(stem)
    if composed is not None:
        return composed
    raise ConfigNotFoundError(
        f"config {name!r} not found: it is neither a file nor in {CONFIG_DIR}. "
        f"Available configs: {', '.join(available_configs())}"
    )


def compose_config_names(stem: str) -> list[str] | None:
    """``<task>_<optimizer>`` as its fragments (see ``resolve_config``); None if it is not one."""
    for task in sorted(p.stem for p in TASK_DIR.glob("*.yaml")):
        optimizer = stem.removeprefix(f"{task}_")
        if optimizer != stem and (OPTIMIZER_DIR / f"{optimizer}.yaml").is_file():
            files = [TASK_DIR / f"{task}.yaml", OPTIMIZER_DIR / f"{optimizer}.yaml"]
            override = OVERRIDE_DIR / f"{stem}.yaml"
            return [str(p) for p in (*files, *([override] if override.is_file() else []))]
    return None


def available_configs() -> list[str]:
    """Every name ``--config`` accepts without a path: ``<task>_<optimizer>.yaml`` for every
    task and optimizer fragment, the fragments themselves, and any full config in configs/."""
    tasks = sorted(p.stem for p in TASK_DIR.glob("*.yaml"))
    optimizers = sorted(p.stem for p in OPTIMIZER_DIR.glob("*.yaml"))
    composite = [f"{task}_{optimizer}.yaml" for task in tasks for optimizer in optimizers]
    fragments = [f"{p.parent.name}/{p.name}" for d in (TASK_DIR, OPTIMIZER_DIR)
                 for p in sorted(d.glob("*.yaml"))]  # fmt: skip
    own = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    return [*composite, *fragments, *own]


def load_config(name: str) -> dict[str, Any]:
    """The plain YAML content that ``--config name`` stands for: its files merged in order
    (mappings merged key by key, everything else replaced by the later file), as LightningCLI
    merges them for the fragments in configs/. For tests and scripts that edit a config and
    write it out as one file."""
    import yaml

    merged: dict[str, Any] = {}
    for path in resolve_config(name):
        _merge_into(merged, yaml.safe_load(Path(path).read_text()) or {})
    return merged


def _merge_into(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge_into(base[key], value)
        else:
            base[key] = value


def _map_config_args(argv: Sequence[str], fn: Callable[[str], list[str]]) -> list[str]:
    """Replace the value of every ``--config X`` / ``--config=X`` / ``-c X`` by the values
    ``fn(X)``, one config argument each, in the same spelling."""
    out: list[str] = []
    expect_config = None
    for arg in argv:
        if expect_config is not None:
            for value in fn(arg):
                out += [expect_config, value]
            expect_config = None
        elif arg in ("--config", "-c"):
            expect_config = arg
        elif arg.startswith("--config="):
            out += ["--config=" + value for value in fn(arg.split("=", 1)[1])]
        else:
            out.append(arg)
    if expect_config is not None:
        out.append(expect_config)  # a trailing --config without a value: LightningCLI says so
    return out


def resolve_config_args(argv: Sequence[str]) -> list[str]:
    """Rewrite every config argument so that its values are paths (a composite name becomes
    one ``--config`` per fragment), each checked to be YAML that parses."""

    def resolve_and_check(name: str) -> list[str]:
        paths = resolve_config(name)
        for path in paths:
            check_yaml(path)
        return paths

    return _map_config_args(argv, resolve_and_check)


def check_yaml(path: str) -> None:
    """A config file that is not valid YAML, named with the line and the reason (jsonargparse
    says only 'in "<unicode string>", line 4, column 1')."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError:
        return  # not a file (a YAML string given to --config): LightningCLI parses it
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        hint = " (indent YAML with spaces, not tabs)" if "\t" in text else ""
        raise ConfigError(f"config {path} is not valid YAML{where}: {problem}{hint}") from None


def config_stem(argv: Sequence[str]) -> str:
    """The run folder's name: the last config file's name, and for an optimizer fragment
    after a task fragment ``<task>_<optimizer>``, so that ``--config cifarnet_adam.yaml`` and
    its two fragments share ``runs/cifarnet_adam/``; 'run' without a config."""
    name, task = "run", None
    configs: list[str] = []
    _map_config_args(argv, lambda value: configs.append(value) or [value])
    for config in configs:
        path = Path(config)
        name = path.stem
        if path.parent.name == TASK_DIR.name:
            task = path.stem
        elif path.parent.name == OPTIMIZER_DIR.name and task is not None:
            name = f"{task}_{path.stem}"
    return name
