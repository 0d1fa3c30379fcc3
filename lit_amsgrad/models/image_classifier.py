"""The paper's image tasks as one LightningModule: a network, cross-entropy, accuracy, an injected optimizer."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics.classification import MulticlassAccuracy

from datamodules.resume import normalise_fit_position
from lit_amsgrad.models.hparams import plain_value
from lit_amsgrad.models.networks import build_network
from lit_amsgrad.optim import AMSGrad


class ImageClassifier(L.LightningModule):
    """Trains ``net`` ("logreg", "mlp" or "cifarnet") with whatever optimizer the config names.

    Args:
        net: which of the paper's networks.
        optimizer: called with the parameters; in a config a ``class_path``/``init_args`` of any
            ``lit_amsgrad.optim`` or ``torch.optim`` class. Default: the paper's AMSGrad.
        lr_scheduler: optional, called with the optimizer; stepped every epoch
            (``ReduceLROnPlateau`` watches ``val/loss``).

    Logs ``{train,val,test}/loss`` and ``{train,val,test}/acc`` (top-1, over all examples).
    """

    def __init__(
        self,
        net: str = "logreg",
        optimizer: OptimizerCallable = AMSGrad,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        # under LightningCLI this records the config (class paths), not the callables
        self.save_hyperparameters()
        for key in ("optimizer", "lr_scheduler"):  # in Python: a factory, recorded as plain
            self.hparams[key] = plain_value(self.hparams[key])
        self.net = build_network(net)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        # one metric object per evaluation stage: their states must not mix. train/acc is a
        # step value, counted directly (``_log_train``): a torchmetrics forward per step cost
        # more than the logistic regression's whole step
        self.val_acc = MulticlassAccuracy(num_classes=10, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=10, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_start(self) -> None:
        """Dropout masks must differ between DDP ranks (each rank sees other examples); the
        initial weights (broadcast by DDP), the data split and the shuffling seed must not."""
        if self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + 7919 * self.trainer.global_rank)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the RNG (dropout masks) with the run, so a resumed run draws what an
        uninterrupted one draws."""
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        normalise_fit_position(
            checkpoint
        )  # epoch-end and mid-validation checkpoints resume exactly
        rng = checkpoint.get("rng_state")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if self._logs_this_step(batch_idx):
            self._log_train(loss.detach(), logits.detach(), y)
        return loss

    def _logs_this_step(self, batch_idx: int) -> bool:
        """Whether train/* of this step can reach anyone: the loggers write every
        ``log_every_n_steps`` steps, callbacks read the epoch's last value, a progress bar
        shows every step. Lightning's ``self.log`` costs ~0.1-0.6 ms a call, as much as a
        logistic-regression step, so the other steps skip it (the same decision on every
        rank, as the DDP reduction of the logged values needs)."""
        trainer = self.trainer
        return (
            (trainer.global_step + 1) % max(trainer.log_every_n_steps, 1) == 0
            or batch_idx + 1 >= trainer.num_training_batches
            or trainer.should_stop
            or 0 < trainer.max_steps <= trainer.global_step + 1  # the last step is logged
            or trainer.progress_bar_callback is not None
        )

    def _log_train(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        # under DDP the step values are the global batch's, not rank zero's: the loss is
        # averaged over processes, the accuracy is correct / seen summed over them
        counts = torch.stack([(logits.argmax(dim=1) == y).sum(), y.new_tensor(len(y))]).float()
        if self.trainer.world_size > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        log = {"on_step": True, "on_epoch": False, "batch_size": len(y), "prog_bar": True}
        self.log("train/loss", loss, sync_dist=True, **log)
        self.log("train/acc", counts[0] / counts[1], **log)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test", self.test_acc)

    def _shared_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, accuracy: MulticlassAccuracy
    ) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        accuracy(logits, y)
        # validation and test log once per epoch: each key under exactly its name (no
        # _step/_epoch suffixes). Losses are averaged over processes under DDP (a scalar
        # all-reduce); the metric objects sync their own counts.
        log = {"on_step": False, "on_epoch": True, "batch_size": y.shape[0], "prog_bar": True}
        self.log(f"{stage}/loss", loss, sync_dist=True, **log)
        self.log(f"{stage}/acc", accuracy, **log)
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"},
        }
