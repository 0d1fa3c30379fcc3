"""The paper's image tasks as one LightningModule: a network, cross-entropy, accuracy, an injected optimizer."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics.classification import MulticlassAccuracy

from datamodules.resume import normalise_fit_position
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
        self.net = build_network(net)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        # one metric object per stage: their states must not mix
        # logged every step: under DDP the step value is the global batch's, not rank zero's
        self.train_acc = MulticlassAccuracy(num_classes=10, average="micro", dist_sync_on_step=True)
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
        return self._shared_step(batch, "train", self.train_acc)

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
        # training logs every step, validation and test once per epoch: each key is logged
        # under exactly its name (no _step/_epoch suffixes). Losses are averaged over
        # processes under DDP (a scalar all-reduce); the metric objects sync their own counts.
        train = stage == "train"
        log = {"on_step": train, "on_epoch": not train, "batch_size": y.shape[0], "prog_bar": True}
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
