"""NaN/inf: ``diag/nonfinite`` is logged and training goes on, or training stops with the last
good state saved and a message that names the parameter, the step and what was non-finite."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import NonFiniteError, OptimizerDiagnostics
from callbacks.nonfinite import LAST_GOOD, find_nonfinite, watched_tensors

NAN_AT = 5  # the loss is NaN in the training step where global_step == NAN_AT


class NaNAt(pl.LightningModule):
    """A regression whose loss turns NaN (or a weight inf) at one global step."""

    def __init__(self, nan_at: int = NAN_AT, poison_weight: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
        self.nan_at, self.poison_weight = nan_at, poison_weight
        self.after: dict[int, dict[str, torch.Tensor]] = {}  # params after each global step

    def training_step(self, batch, batch_idx):
        if self.poison_weight and self.global_step == self.nan_at:
            with torch.no_grad():
                self.net[0].weight[0, 0] = float("inf")
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        if self.global_step == self.nan_at:
            loss = loss * float("nan")
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.after[self.global_step] = {k: v.detach().clone() for k, v in self.state_dict().items()}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01, amsgrad=True)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(80, 4, generator=g)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def fit(tmp_path: Path, model: NaNAt, diag: OptimizerDiagnostics, logger=None) -> pl.Trainer:
    pl.seed_everything(0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=10,
        logger=logger or False,
        callbacks=[diag],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model)
    return trainer


def test_stop_saves_the_last_good_state_and_names_parameter_and_step(tmp_path):
    model = NaNAt()
    with pytest.raises(NonFiniteError) as info:
        fit(tmp_path, model, OptimizerDiagnostics(on_nonfinite="stop"))
    message = str(info.value)
    assert "\n" not in message
    assert f"before optimizer step {NAN_AT + 1}:" in message
    assert "grad of 'net.0.weight'" in message and "grad of 'net.2.bias'" in message
    assert "param of" not in message and "optimizer state" not in message
    path = tmp_path / "checkpoints" / LAST_GOOD
    assert str(path) in message

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == NAN_AT
    assert NAN_AT + 1 not in model.after  # the bad update was never applied
    for key, value in checkpoint["state_dict"].items():
        assert torch.isfinite(value).all(), key
        torch.testing.assert_close(value, model.after[NAN_AT][key], rtol=0, atol=0)
    restored = NaNAt()
    restored.load_state_dict(checkpoint["state_dict"])  # loads into a fresh model
    assert all(
        torch.isfinite(s["exp_avg_sq"]).all()
        for s in checkpoint["optimizer_states"][0]["state"].values()
    )


def test_stop_on_parameters_already_non_finite_saves_nothing(tmp_path):
    with pytest.raises(NonFiniteError, match="already non-finite") as info:
        fit(tmp_path, NaNAt(poison_weight=True), OptimizerDiagnostics(on_nonfinite="stop"))
    assert "param of 'net.0.weight'" in str(info.value)
    assert not (tmp_path / "checkpoints" / LAST_GOOD).exists()


def test_log_goes_on_and_counts_nonfinite_entries(tmp_path):
    logger = CSVLogger(tmp_path, name="csv")
    trainer = fit(tmp_path, NaNAt(), OptimizerDiagnostics(log_every_n_steps=2), logger)
    assert trainer.global_step == 10
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("diag/nonfinite")]
    counts = {int(r["step"]): float(r["diag/nonfinite"]) for r in rows}
    assert sorted(counts) == [2, 4, 6, 8, 10]
    assert counts[2] == counts[4] == 0
    # the NaN gradient of update NAN_AT + 1 = 6 makes every param, grad and moment NaN
    n = sum(p.numel() for p in trainer.lightning_module.parameters())
    assert counts[6] == counts[10] == n * 5  # param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq


def test_find_nonfinite_names_the_state_key():
    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.ones(3)
    opt.step()
    assert find_nonfinite(watched_tensors(opt, {id(w): "w"})) == []
    opt.state[w]["exp_avg_sq"][1] = float("inf")
    w.grad[0] = float("nan")
    bad = find_nonfinite(watched_tensors(opt, {id(w): "w"}))
    assert bad == [("w", "grad"), ("w", "optimizer state 'exp_avg_sq'")]
    assert find_nonfinite(watched_tensors(opt, {}, grads=False)) == [
        ("param0", "optimizer state 'exp_avg_sq'")
    ]


def test_on_nonfinite_must_be_log_or_stop():
    with pytest.raises(ValueError, match="on_nonfinite must be one of 'log', 'stop'"):
        OptimizerDiagnostics(on_nonfinite="raise")


class ManualNaN(NaNAt):
    """Manual optimization, two optimizer steps per batch: the check runs at every one."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        for k in range(2):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            if batch_idx == 2 and k == 1:
                loss = loss * float("inf")
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()


def test_stop_under_manual_optimization(tmp_path):
    with pytest.raises(NonFiniteError, match="before optimizer step 6: grad of 'net.0.weight'"):
        fit(tmp_path, ManualNaN(), OptimizerDiagnostics(on_nonfinite="stop"))
    checkpoint = torch.load(tmp_path / "checkpoints" / LAST_GOOD, weights_only=False)
    assert checkpoint["global_step"] == 5
