"""The last training step reaches the loggers, also in a run shorter than the cadence.

Lightning sends step metrics to the loggers every ``log_every_n_steps`` steps only, so a
30-step smoke run at the default 50 logged no ``train/*`` at all, and every run's last
values were missing from its curves. (The diagnostics log their own last step, see
``OptimizerProbe``'s ``log_final``.)
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

#: keys logged by evaluation loops or the diagnostics, which log on their own schedule
NOT_TRAINING = ("val/", "test/", "diag")


class LogTheLastStep(pl.Callback):
    """At the end of a fit, the last step's training metrics, unless Lightning just logged them."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step, every = trainer.global_step, trainer.log_every_n_steps
        if step == 0 or every <= 0 or step % every == 0:
            return
        metrics = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if not key.startswith(NOT_TRAINING)
            and isinstance(value, torch.Tensor)
            and value.numel() == 1
        }
        if not metrics:
            return
        for logger in trainer.loggers:  # Lightning's row of step t is at index t - 1
            logger.log_metrics(metrics, step=step - 1)
            logger.save()
