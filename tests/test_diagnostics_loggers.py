"""OptimizerDiagnostics inside a Trainer: what reaches CSVLogger and an offline W&B run."""

from __future__ import annotations

import csv
import glob
import math
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import OptimizerDiagnostics
from tests.wandb_records import read_history

CONTRACT_KEYS = (  # the diag/ keys of docs/design.md
    "diag/eff_lr/min",
    "diag/eff_lr/median",
    "diag/eff_lr/max",
    "diag/gamma_neg_frac",
    "diag/gamma_min",
    "diag/vhat_active_frac",
    "diag/vhat_max",
    "diag/vhat_growth",
)


class RecordingLogger(Logger):
    """Keeps every log_metrics call, on every rank, so tests can count them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, dict]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.calls.append((step, dict(metrics)))

    def diag(self) -> dict[int, dict]:
        out = {}
        for step, metrics in self.calls:
            if any(k.startswith("diag") for k in metrics):
                assert step not in out, f"diagnostics logged twice at step {step}"
                out[step] = metrics
        return out


class TinyRegression(pl.LightningModule):
    def __init__(self, manual_steps: int = 0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
        self.manual_steps = manual_steps
        self.automatic_optimization = manual_steps == 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.automatic_optimization:
            return nn.functional.mse_loss(self.net(x), y)
        opt = self.optimizers().optimizer  # the raw optimizer, many rounds per batch
        for _ in range(self.manual_steps):
            opt.zero_grad()
            self.manual_backward(nn.functional.mse_loss(self.net(x), y))
            opt.step()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05, amsgrad=True)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 4, generator=g)
        y = x.sum(1, keepdim=True) * torch.linspace(5, 0.1, 96).unsqueeze(1)  # shrinking
        return DataLoader(TensorDataset(x, y), batch_size=8)


def fit(tmp_path: Path, loggers, callback, **trainer_kwargs) -> pl.Trainer:
    pl.seed_everything(0)
    model = TinyRegression(trainer_kwargs.pop("manual_steps", 0))
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=loggers,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **trainer_kwargs,
    )
    trainer.fit(model)
    return trainer


def test_csv_logger_gets_the_scalars_at_optimizer_steps(tmp_path):
    recorder = RecordingLogger()
    csv_logger = CSVLogger(tmp_path, name="csv")
    diag = OptimizerDiagnostics(log_every_n_steps=3, histogram_every_n_steps=6)
    trainer = fit(tmp_path, [csv_logger, recorder], diag, max_steps=12)
    logged = recorder.diag()
    assert sorted(logged) == [3, 6, 9, 12]
    names = [n for n, _ in trainer.lightning_module.named_parameters()]
    for key in CONTRACT_KEYS:
        assert key in logged[6]
        assert all(f"{key}/{n}" in logged[6] for n in names)
    assert not any(k.startswith("diag_hist") for m in logged.values() for k in m)  # W&B only

    with open(Path(csv_logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for step, metrics in logged.items():
        row = next(r for r in rows if r["step"] == str(step) and r["diag/eff_lr/min"])
        for key, value in metrics.items():
            assert float(row[key]) == pytest.approx(value, rel=1e-12)

    # and the last logging step against torch's update rule, from the final optimizer state
    opt = trainer.optimizers[0]
    inv = []
    for p in trainer.lightning_module.parameters():
        s, (b1, b2), t = opt.state[p], opt.defaults["betas"], float(opt.state[p]["step"])
        denom = s["max_exp_avg_sq"].double().sqrt() / math.sqrt(1 - b2**t) + opt.defaults["eps"]
        inv.append((denom * (1 - b1**t) / opt.defaults["lr"]).flatten())
    inv = torch.cat(inv)
    assert logged[12]["diag/eff_lr/min"] == pytest.approx(1 / inv.max().item(), rel=1e-6)
    assert logged[12]["diag/eff_lr/max"] == pytest.approx(1 / inv.min().item(), rel=1e-6)


def test_manual_optimization_every_optimizer_step_counts(tmp_path):
    recorder = RecordingLogger()
    diag = OptimizerDiagnostics(log_every_n_steps=5, histogram_every_n_steps=0)
    trainer = fit(tmp_path, [recorder], diag, max_epochs=1, limit_train_batches=3, manual_steps=7)
    # 21 optimizer steps in 3 batches: every 5th, and the last one
    assert sorted(recorder.diag()) == [5, 10, 15, 20, 21]
    # the hooks are gone after fit: more steps log nothing
    opt = trainer.optimizers[0]
    for p in trainer.lightning_module.parameters():
        p.grad = torch.ones_like(p)
    for _ in range(10):
        opt.step()
    assert sorted(recorder.diag()) == [5, 10, 15, 20, 21]


def test_no_logger_no_work(tmp_path):
    diag = OptimizerDiagnostics(log_every_n_steps=1)
    fit(tmp_path, False, diag, max_steps=3)
    assert diag._probes == []


def test_invalid_arguments():
    with pytest.raises(ValueError, match="log_every_n_steps"):
        OptimizerDiagnostics(log_every_n_steps=0)
    with pytest.raises(ValueError, match="histogram_every_n_steps"):
        OptimizerDiagnostics(histogram_every_n_steps=-1)


# ---------------------------------------------------------------- W&B offline
read_wandb_history = read_history  # the rows of a .wandb file (tests/wandb_records.py)


def test_wandb_offline_run_has_scalars_and_histograms(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    recorder = RecordingLogger()
    wandb_logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="diag-test")
    diag = OptimizerDiagnostics(log_every_n_steps=3, histogram_every_n_steps=6)
    trainer = fit(tmp_path, [wandb_logger, recorder], diag, max_steps=12)
    run_dir = Path(wandb_logger.experiment.dir).parent
    wandb.finish()

    run_file = Path(glob.glob(str(run_dir / "run-*.wandb"))[0])
    for _ in range(50):  # wandb-core may still be flushing
        rows = read_wandb_history(run_file)
        if sum("diag_hist/eff_lr" in "".join(r) for r in rows) >= 2:
            break
        time.sleep(0.2)
    scalars = {r["trainer/global_step"]: r for r in rows if "diag/eff_lr/min" in r}
    assert sorted(scalars) == [3, 6, 9, 12]
    for step, metrics in recorder.diag().items():
        for key, value in metrics.items():
            assert scalars[step][key] == pytest.approx(value, rel=1e-12), key

    hists = {r["trainer/global_step"]: r for r in rows if "diag_hist/eff_lr/_type" in r}
    assert sorted(hists) == [6, 12]
    for name, p in trainer.lightning_module.named_parameters():
        key = f"diag_hist/eff_lr/{name}"
        assert hists[12][f"{key}/_type"] == "histogram"
        counts, bins = hists[12][f"{key}/values"], hists[12][f"{key}/bins"]
        assert sum(counts) == p.numel() and len(bins) == len(counts) + 1
        # the bins are log10 of the effective step: the logged min and max lie in the first/last
        assert bins[0] <= math.log10(scalars[12][f"diag/eff_lr/min/{name}"]) + 1e-9
        assert bins[-1] >= math.log10(scalars[12][f"diag/eff_lr/max/{name}"]) - 1e-9


def test_resumed_fit_continues_the_step_count(tmp_path):
    first = fit(
        tmp_path, [RecordingLogger()], OptimizerDiagnostics(log_every_n_steps=3), max_steps=6
    )
    ckpt = tmp_path / "six.ckpt"
    first.save_checkpoint(ckpt)
    recorder = RecordingLogger()
    pl.seed_everything(0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=12,
        logger=[recorder],
        callbacks=[OptimizerDiagnostics(log_every_n_steps=3)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(TinyRegression(), ckpt_path=ckpt)
    assert sorted(recorder.diag()) == [9, 12]
    assert "diag/gamma_neg_frac" in recorder.diag()[9]


# ---------------------------------------------------------------- TensorBoard
class RecordingWriter:
    """Stands in for TensorBoard's SummaryWriter (tensorboard is not a dependency here)."""

    def __init__(self) -> None:
        self.scalars: dict[str, list[tuple[int, float]]] = {}
        self.histograms: dict[str, list[dict]] = {}

    def add_scalar(self, tag, value, global_step=None, **kwargs) -> None:
        self.scalars.setdefault(tag, []).append((global_step, float(value)))

    def add_histogram_raw(self, tag, global_step=None, **kwargs) -> None:
        self.histograms.setdefault(tag, []).append({"step": global_step, **kwargs})


class RecordedTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger, its own ``log_metrics``, writing into a RecordingWriter."""

    def __init__(self, root: Path) -> None:
        Logger.__init__(self)  # TensorBoardLogger's own needs tensorboard installed
        self._root_dir, self._name, self._version, self._prefix = str(root), "tb", 0, ""
        self._sub_dir, self._default_hp_metric, self._log_graph = None, False, False
        self.hparams: dict = {}
        self._experiment = RecordingWriter()

    @property
    def experiment(self) -> RecordingWriter:
        return self._experiment

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def save(self) -> None:
        pass

    def finalize(self, status: str) -> None:
        pass


def test_tensorboard_logger_gets_the_scalars_at_optimizer_steps(tmp_path):
    recorder = RecordingLogger()
    tensorboard = RecordedTensorBoardLogger(tmp_path)
    fit(tmp_path, [tensorboard, recorder], OptimizerDiagnostics(log_every_n_steps=4), max_steps=12)
    scalars = tensorboard.experiment.scalars
    for step, metrics in recorder.diag().items():
        for key, value in metrics.items():
            assert (step, pytest.approx(value, rel=1e-6)) in scalars[key], key
    assert [s for s, _ in scalars["diag/eff_lr/min"]] == [4, 8, 12]


def test_log_histograms_to_tensorboard_and_not_to_csv(tmp_path):
    from callbacks.adapters import histogram_loggers, log_histograms

    tensorboard, csv_logger = RecordedTensorBoardLogger(tmp_path), CSVLogger(tmp_path)
    assert histogram_loggers([csv_logger, tensorboard]) == [tensorboard]
    counts = np.array([2, 0, 5, 1])
    edges = np.array([-4.0, -3.5, -3.0, -2.5, -2.0])  # log10 of the effective step
    log_histograms([csv_logger, tensorboard], {"diag_hist/eff_lr/w": (counts, edges)}, step=30)
    (hist,) = tensorboard.experiment.histograms["diag_hist/eff_lr/w"]
    assert hist["step"] == 30 and hist["num"] == 8
    assert hist["bucket_counts"] == [2, 0, 5, 1] and hist["bucket_limits"] == [
        -3.5,
        -3.0,
        -2.5,
        -2.0,
    ]
    assert (hist["min"], hist["max"]) == (-4.0, -2.0)
    centers = (edges[:-1] + edges[1:]) / 2
    assert hist["sum"] == pytest.approx((counts * centers).sum())
    assert hist["sum_squares"] == pytest.approx((counts * centers**2).sum())
    assert csv_logger.experiment.metrics == []  # scalars only: no histograms there


def test_a_fit_sends_the_effective_step_histograms_to_tensorboard(tmp_path):
    """Before: the callback sent histograms to W&B loggers only; TensorBoard got scalars."""
    tensorboard = RecordedTensorBoardLogger(tmp_path)
    diag = OptimizerDiagnostics(log_every_n_steps=3, histogram_every_n_steps=6)
    fit(tmp_path, [tensorboard], diag, max_steps=12)
    histograms = tensorboard.experiment.histograms
    assert histograms, "no histogram reached TensorBoard"
    for key, entries in histograms.items():
        assert key.startswith("diag_hist/eff_lr")
        assert [e["step"] for e in entries] == [6, 12]
        assert all(e["num"] > 0 for e in entries)
