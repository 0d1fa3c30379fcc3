"""train/* is logged only where someone can read it, with the same values as every step."""

from __future__ import annotations

import csv
import functools

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

from datamodules import MNISTDataModule
from lit_amsgrad.models import ImageClassifier
from lit_amsgrad.optim import AMSGrad
from tests.fakedata import write_fake_mnist


class Expected(L.Callback):
    """The step's loss and accuracy, computed from the batch before the optimizer step."""

    def __init__(self) -> None:
        self.values: dict[int, tuple[float, float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        x, y = batch
        with torch.no_grad():
            logits = pl_module(x)
        accuracy = (logits.argmax(1) == y).float().mean().item()
        self.values[trainer.global_step] = (F.cross_entropy(logits, y).item(), accuracy)


@pytest.mark.parametrize("progress_bar", [False, True])
def test_train_metrics_reach_the_logger_at_its_steps_and_self_log_runs_only_then(
    progress_bar, tmp_path, monkeypatch
):
    write_fake_mnist(tmp_path / "data", n_train=1000 + 50, n_test=10)  # 8 batches of 128
    model = ImageClassifier(net="logreg", optimizer=functools.partial(AMSGrad, lr=1e-2))
    calls: list[int] = []
    log = model.log
    monkeypatch.setattr(
        model, "log", lambda *a, **k: (calls.append(model.global_step), log(*a, **k))
    )
    expected = Expected()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, log_every_n_steps=3, logger=CSVLogger(tmp_path),
        callbacks=[expected], enable_checkpointing=False, enable_progress_bar=progress_bar,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
    )  # fmt: skip
    data = MNISTDataModule(tmp_path / "data", val_size=50, num_workers=0)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 8
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/loss")]
    assert [int(row["step"]) for row in rows] == [2, 5]  # Lightning's logging steps
    for row in rows:
        loss, accuracy = expected.values[int(row["step"])]
        assert float(row["train/loss"]) == pytest.approx(loss, rel=1e-6)
        assert float(row["train/acc"]) == pytest.approx(accuracy, rel=1e-6)
    # the epoch's last value is what callbacks read
    assert trainer.callback_metrics["train/acc"].item() == pytest.approx(expected.values[7][1])
    logged_steps = sorted(set(calls))
    assert logged_steps == (list(range(8)) if progress_bar else [2, 5, 7])
