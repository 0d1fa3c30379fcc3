"""A checkpoint when a fit is interrupted (SIGTERM from a scheduler, or Ctrl-C).

Lightning turns SIGTERM into ``SIGTERMException`` at the end of the current batch and
Ctrl-C into ``KeyboardInterrupt``; both reach the callbacks' ``on_exception``. Other
exceptions (a bug, missing data) save nothing: a checkpoint of a broken run is not one to
resume from.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import OnExceptionCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

INTERRUPTIONS = (SIGTERMException, KeyboardInterrupt)


class InterruptionCheckpoint(OnExceptionCheckpoint):
    """Saves ``<dirpath>/last.ckpt`` on SIGTERM or Ctrl-C, so ``--ckpt_path last`` resumes."""

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        super().__init__(dirpath, filename)

    def on_exception(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        exception = args[-1] if args else kwargs.get("exception")
        if not isinstance(exception, INTERRUPTIONS) or trainer.global_step == 0:
            return
        super().on_exception(trainer, *args, **kwargs)
        rank_zero_info(
            f"Interrupted at step {trainer.global_step}: saved {self.ckpt_path}; "
            "resume with --ckpt_path last"
        )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Keep the file: Lightning's version deletes it when a (resumed) run ends normally,
        which would leave nothing to resume from if that run saved no checkpoint of its own."""
