"""A checkpoint when a fit is interrupted (SIGTERM from a scheduler, or Ctrl-C).

Lightning turns SIGTERM into ``SIGTERMException`` at the end of the current batch and
Ctrl-C into ``KeyboardInterrupt``; both reach the callbacks' ``on_exception``. Other
exceptions (a bug, missing data) save nothing: a checkpoint of a broken run is not one to
resume from.

A plain ``Callback``, not Lightning's ``OnExceptionCheckpoint``: the trainer treats the
presence of that class as a request to resume, turning ``fit(ckpt_path=None)`` into
``ckpt_path="last"``, so a fresh fit into a folder that held a run silently restored it.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

INTERRUPTIONS = (SIGTERMException, KeyboardInterrupt)


class InterruptionCheckpoint(pl.Callback):
    """Saves ``<dirpath>/last.ckpt`` on SIGTERM or Ctrl-C, so ``--ckpt_path last`` resumes."""

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.dirpath, self.filename = Path(dirpath), filename

    @property
    def ckpt_path(self) -> str:
        return str(self.dirpath / f"{self.filename}.ckpt")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, INTERRUPTIONS) or trainer.global_step == 0:
            return
        trainer.save_checkpoint(self.ckpt_path)
        rank_zero_info(
            f"Interrupted at step {trainer.global_step}: saved {self.ckpt_path}; "
            "resume with --ckpt_path last"
        )
