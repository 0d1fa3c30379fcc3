"""``OptimizerDiagnostics``: why Adam can fail, as W&B (or any logger's) charts.

One focused callback in the spirit of Lightning's ``LearningRateMonitor``: it hooks each of the
trainer's optimizers (see ``callbacks.probe``) and logs through ``trainer.loggers`` directly, so
it also sees the optimizer steps a manual-optimization ``training_step`` takes in a loop.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from callbacks.adapters import moment_view
from callbacks.probe import OptimizerProbe


class OptimizerDiagnostics(pl.Callback):
    """Logs effective step sizes, the sign of Gamma_t and the growth of vhat (DESIGN.md keys).

    Scalars go to every logger every ``log_every_n_steps`` optimizer steps, W&B histograms
    ``diag_hist/eff_lr/<name>`` every ``histogram_every_n_steps`` (0 turns them off). The step
    passed to the loggers is the optimizer's own step count (the trainer's global step in
    automatic optimization); with several optimizers, optimizer i > 0 logs under ``diag_opt<i>/``.
    Under DDP the optimizer state is identical on every rank, so only rank zero computes.
    """

    def __init__(
        self,
        log_every_n_steps: int = 50,
        histogram_every_n_steps: int = 500,
        per_parameter: bool = True,
    ) -> None:
        if not isinstance(log_every_n_steps, int) or log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be an int >= 1, got {log_every_n_steps!r}")
        if not isinstance(histogram_every_n_steps, int) or histogram_every_n_steps < 0:
            raise ValueError(
                f"histogram_every_n_steps must be an int >= 0, got {histogram_every_n_steps!r}"
            )
        self.log_every_n_steps = log_every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.per_parameter = per_parameter
        self._probes: list[OptimizerProbe] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._detach()
        if not trainer.is_global_zero or not trainer.loggers:
            return
        names = {id(p): name for name, p in pl_module.named_parameters()}
        for i, optimizer in enumerate(trainer.optimizers):
            optimizer = getattr(optimizer, "_optimizer", optimizer)  # LightningOptimizer
            view = moment_view(optimizer)
            if view is None:
                rank_zero_warn(
                    f"OptimizerDiagnostics: {type(optimizer).__name__} has no inverse_lr/"
                    "second_moment and no adapter; it is not monitored."
                )
                continue
            probe = OptimizerProbe(
                optimizer,
                view,
                names,
                on_metrics=lambda m, s, t=trainer: self._log(t, m, s),
                on_histograms=(lambda h, s, t=trainer: self._log_histograms(t, h, s))
                if any(isinstance(lg, WandbLogger) for lg in trainer.loggers)
                else None,
                log_every_n_steps=self.log_every_n_steps,
                histogram_every_n_steps=self.histogram_every_n_steps,
                per_parameter=self.per_parameter,
                prefix="diag" if i == 0 else f"diag_opt{i}",
                hist_prefix="diag_hist" if i == 0 else f"diag_hist_opt{i}",
                step=_completed_steps(optimizer),
            )
            self._probes.append(probe.attach())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._detach()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._detach()

    def _detach(self) -> None:
        for probe in self._probes:
            probe.detach()
        self._probes = []

    @staticmethod
    def _log(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    @staticmethod
    def _log_histograms(trainer: pl.Trainer, hists: dict[str, Any], step: int) -> None:
        import wandb

        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

        payload = {
            key: wandb.Histogram(np_histogram=(counts.astype(np.int64), edges))
            for key, (counts, edges) in hists.items()
        }
        for logger in wandb_loggers:
            logger.log_metrics(payload, step=step)


def _completed_steps(optimizer: torch.optim.Optimizer) -> int:
    """Steps already taken (a resumed run), read once from torch's ``step`` state key."""
    steps = [state["step"] for state in optimizer.state.values() if "step" in state]
    return max((int(s.item() if isinstance(s, torch.Tensor) else s) for s in steps), default=0)
