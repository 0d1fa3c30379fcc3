"""Stop a fit once a logged metric reaches a target: steps-to-target runs need no more."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback


class StopAtTarget(Callback):
    """Sets ``trainer.should_stop`` once ``monitor`` (a key of ``trainer.callback_metrics``)
    is at or below ``target``, checked after every training batch and every validation.

    Lightning's ``EarlyStopping(stopping_threshold=...)`` checks only at validation or epoch
    ends; the synthetic tasks have neither within a run. The decision is reduced across DDP
    processes (any process that reached it stops all), as ``EarlyStopping`` does.
    """

    def __init__(self, monitor: str, target: float) -> None:
        self.monitor, self.target = monitor, target

    def _check(self, trainer: Any) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        reached = value is not None and float(value) <= self.target
        if trainer.strategy.reduce_boolean_decision(reached, all=False):
            trainer.should_stop = True

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        self._check(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)
