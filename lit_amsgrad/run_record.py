"""What a run records about itself: the settings that ran, in ``config.yaml`` and in W&B.

LightningCLI saves ``config.yaml`` and Lightning logs the model's hyperparameters; the W&B
config then lacks the trainer settings and the seed, and nothing records what Lightning
resolved (the accelerator, the world size, the precision). A setting Lightning would quietly
replace (``16-mixed`` on a CPU runs ``bf16-mixed``) is refused instead, so that the
recorded value is the one that ran.
"""

from __future__ import annotations

import json
from typing import Any

from lightning.fabric.connector import _convert_precision_to_unified_args
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from lit_amsgrad.errors import ConfigError


def resolved_settings(trainer: Trainer) -> dict[str, Any]:
    """What Lightning made of the trainer settings on this machine."""
    return {
        "accelerator": type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
        "strategy": type(trainer.strategy).__name__,
        "precision": trainer.precision,
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
    }


def refuse_replaced_precision(requested: Any, trainer: Trainer) -> None:
    """One line when Lightning would run another precision than the config asks for."""
    if requested is None:
        return
    wanted = _convert_precision_to_unified_args(requested)
    if wanted != trainer.precision:
        accelerator = resolved_settings(trainer)["accelerator"]
        raise ConfigError(
            f"trainer.precision={requested} is not available on {accelerator} (Lightning would "
            f"run {trainer.precision}): set --trainer.precision={trainer.precision} or 32-true"
        )


class RecordedConfigCallback(SaveConfigCallback):
    """Saves ``config.yaml`` as LightningCLI does, and gives the logger the same settings:
    ``trainer``, ``seed_everything``, ``ckpt_path`` and ``resolved`` (see
    :func:`resolved_settings`), beside the model's hyperparameters Lightning logs itself."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.loggers:
            return
        config = self.parser.dump(self.config, skip_none=False, format="json_indented")
        settings = json.loads(config)
        recorded = {
            "trainer": settings.get("trainer"),
            "seed_everything": settings.get("seed_everything"),
            "ckpt_path": settings.get("ckpt_path"),
            "data": settings.get("data"),
            "resolved": resolved_settings(trainer),
        }
        for logger in trainer.loggers:  # every one: figure 2 logs to CSV first, then W&B
            logger.log_hyperparams(recorded)
