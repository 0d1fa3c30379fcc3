"""Resuming trains what the checkpoint recorded, or is refused: no silent mix of the two.

LightningCLI merges a checkpoint's hyperparameters over the command line's, and the optimizer
state then restores the old lr into the param groups, so ``--ckpt_path`` with a changed lr,
optimizer or config trained the checkpoint's settings into the new config's folder while
``config.yaml`` recorded the new ones. Here the two are compared instead, and any difference
in what is trained (the model and its optimizer, the data and its split) refuses the resume
with one line that lists the differences. What only says how or where to compute may change:
``fused``/``foreach``, the data folder and worker count, and every trainer setting (a resumed
run may train for longer, on more devices).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lit_amsgrad.checkpoint_io import CorruptCheckpointError, verify_checkpoint
from lit_amsgrad.errors import ConfigError

#: keys that say how or where to compute, not what: allowed to differ on resume
HOW_KEYS = {"fused", "foreach", "data_dir", "num_workers", "download", "pin_memory"}
MAX_LISTED = 5


class ChangedSettingsError(ConfigError):
    """``--ckpt_path`` with settings other than the ones the checkpoint trained with."""


def _plain(value: Any) -> Any:
    if hasattr(value, "as_dict"):  # a jsonargparse Namespace
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value
    return out


def _as_config(hparams: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A checkpoint's saved hyperparameters as a class_path/init_args config."""
    if not hparams:
        return None
    hparams = {k: v for k, v in hparams.items() if k != "_instantiator"}
    if "_class_path" in hparams:
        return {"class_path": hparams.pop("_class_path"), "init_args": _plain(hparams)}
    return {"init_args": _plain(hparams)}


SECTIONS = {"model": "hyper_parameters", "data": "datamodule_hyper_parameters"}


def settings_differences(
    checkpoint: Mapping[str, Any],
    config: Mapping[str, Any],
    sections: tuple[str, ...] = ("model", "data"),
) -> list[str]:
    """'key: saved in the checkpoint, given now' for each setting that differs."""
    differences = []
    for section in sections:
        saved_key = SECTIONS[section]
        saved = _as_config(checkpoint.get(saved_key))
        if saved is None:
            continue
        if section == "data":
            saved = _with_split_seed(saved)
        now = _plain(config.get(section)) or {}
        if "class_path" not in saved:
            now = {"init_args": now.get("init_args", {})}
        old, new = _flatten(saved, section, {}), _flatten(now, section, {})
        differences += _compare(old, new)
    if "model" in sections:
        differences += _optimizer_differences(checkpoint, config)
    return list(dict.fromkeys(differences))  # the lr of hparams and of the state: once


def _with_split_seed(saved: dict[str, Any]) -> dict[str, Any]:
    """Image datamodules saved before ``split_seed`` existed drew their split with ``seed``:
    that is the split seed they trained on, so a resume with another split is refused."""
    init = saved.get("init_args", {})
    if "seed" in init and "val_size" in init and "split_seed" not in init:
        saved = {**saved, "init_args": {**init, "split_seed": init["seed"]}}
    return saved


def _compare(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Differences on the keys the checkpoint recorded (a module may not save every
    argument, e.g. the synthetic task's optimizer; those are compared through its state)."""
    out = []
    for key in sorted(old):
        if key.rsplit(".", 1)[-1] in HOW_KEYS:
            continue
        if key in new and _same(old[key], new[key]):
            continue
        after = repr(new[key]) if key in new else "(not set)"
        out.append(f"{key}: {old[key]!r} in the checkpoint, {after} now")
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _optimizer_differences(checkpoint: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The optimizer's hyperparameters as its saved param groups hold them (``initial_lr``
    where a scheduler moved ``lr``) against the optimizer config's ``init_args``."""
    states = checkpoint.get("optimizer_states") or []
    spec = (_plain(config.get("model")) or {}).get("init_args", {}).get("optimizer")
    if not states or not isinstance(spec, Mapping) or "init_args" not in spec:
        return []
    groups = states[0].get("param_groups") or []
    if not groups:
        return []
    group = dict(groups[0])
    if "initial_lr" in group:
        group["lr"] = group["initial_lr"]
    prefix = "model.init_args.optimizer.init_args"
    old = {
        f"{prefix}.{k}": _plain(v)
        for k, v in group.items()
        if k in spec["init_args"] and k not in HOW_KEYS
    }
    return _compare(old, _flatten(spec["init_args"], prefix, {}))


def refuse_changed_settings(
    path: str | Path,
    checkpoint: Mapping[str, Any],
    config: Mapping[str, Any],
    sections: tuple[str, ...] = ("model", "data"),
) -> None:
    """Raise ChangedSettingsError listing what differs (``sections``: what must match; a
    test or validation of a checkpoint may use other data settings, a resumed fit not)."""
    differences = settings_differences(checkpoint, config, sections)
    if not differences:
        return
    listed = "; ".join(differences[:MAX_LISTED])
    more = f"; and {len(differences) - MAX_LISTED} more" if len(differences) > MAX_LISTED else ""
    raise ChangedSettingsError(
        f"--ckpt_path {path} was trained with other settings than these ({listed}{more}): "
        "resume with the settings it was trained with, or start a new fit without --ckpt_path"
    )


def newest_intact(candidates: list[Path]) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest intact checkpoint of ``candidates`` (oldest first) and the newer ones
    that were refused, with why."""
    refused = []
    for path in reversed(candidates):
        try:
            verify_checkpoint(path)
        except CorruptCheckpointError as error:
            refused.append((path, str(error)))
            continue
        return path, refused
    return None, refused
