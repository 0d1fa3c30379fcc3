"""Logging steps read in batches (``flush_every_s``): the same metrics, in order, never lost."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from callbacks import OptimizerDiagnostics, OptimizerProbe, moment_view
from callbacks.probe import MAX_PENDING
from lit_amsgrad.optim import AMSGrad
from tests.test_diagnostics_loggers import RecordingLogger


def probe_pair(**batched):
    """One AMSGrad on a small model with two probes: one that reads every logging step as it
    happens and one that reads in batches; both log per parameter, histograms every 3."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    opt = AMSGrad(model.parameters(), lr=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    sinks = {}
    probes = {}
    for way, flush in (("now", 0.0), ("batched", batched.get("flush_every_s", 1e6))):
        sinks[way] = {"metrics": [], "hists": []}
        probes[way] = OptimizerProbe(
            opt,
            moment_view(opt),
            names,
            on_metrics=lambda m, s, out=sinks[way]: out["metrics"].append((s, m)),
            on_histograms=lambda h, s, out=sinks[way]: out["hists"].append((s, h)),
            log_every_n_steps=1,
            histogram_every_n_steps=3,
            flush_every_s=flush,
        ).attach()

    def step(t: int) -> None:
        gen = torch.Generator().manual_seed(t)
        for p in model.parameters():
            p.grad = (10.0 if t <= 3 else 0.01) * torch.randn(p.shape, generator=gen)
        opt.step()

    return probes, sinks, step


def test_a_batch_hands_the_sinks_what_reading_each_step_does_in_the_same_order():
    probes, sinks, step = probe_pair()
    for t in range(1, 12):
        step(t)
    # the first logging step is read at once (nothing came before it to time); the rest wait
    assert [s for s, _ in sinks["batched"]["metrics"]] == [1]
    probes["batched"].flush()
    now, batched = sinks["now"], sinks["batched"]
    assert [s for s, _ in batched["metrics"]] == list(range(1, 12))
    assert batched["metrics"] == now["metrics"]  # exactly: vhat_growth chains across a batch
    assert any("diag/vhat_growth" in m for _, m in batched["metrics"])
    assert [s for s, _ in batched["hists"]] == [3, 6, 9]
    for (s1, h1), (s2, h2) in zip(now["hists"], batched["hists"], strict=True):
        assert s1 == s2 and h1.keys() == h2.keys()
        for key in h1:
            assert h1[key][0].tolist() == h2[key][0].tolist()
            assert h1[key][1].tolist() == h2[key][1].tolist()


def test_detach_reads_what_waits():
    probes, sinks, step = probe_pair()
    for t in range(1, 6):
        step(t)
    probes["batched"].detach()
    assert [s for s, _ in sinks["batched"]["metrics"]] == [1, 2, 3, 4, 5]


def test_at_most_max_pending_logging_steps_wait():
    probes, sinks, step = probe_pair()
    for t in range(1, MAX_PENDING + 3):
        step(t)
    # step 1 at once, then steps 2..MAX_PENDING+1 as one batch when the batch is full
    assert [s for s, _ in sinks["batched"]["metrics"]] == list(range(1, MAX_PENDING + 2))


def test_logging_steps_slower_than_flush_every_s_are_read_at_once():
    probes, sinks, step = probe_pair(flush_every_s=0.02)
    for t in range(1, 5):
        time.sleep(0.03)
        step(t)
        assert [s for s, _ in sinks["batched"]["metrics"]] == list(range(1, t + 1))


@pytest.mark.parametrize("flush_every_s", [-1.0, float("inf"), float("nan"), "1", True])
def test_flush_every_s_must_be_a_finite_number_of_seconds(flush_every_s):
    with pytest.raises(ValueError, match="flush_every_s must be a number of seconds >= 0"):
        OptimizerDiagnostics(flush_every_s=flush_every_s)


# ---------------------------------------------------------------- through the Trainer
class Regression(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return AMSGrad(self.parameters(), lr=0.01)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 3, generator=g)
        return torch.utils.data.DataLoader(list(zip(x, x.sum(1, keepdim=True), strict=True)), 8)


class AtStep(pl.Callback):
    """At the end of step ``at``: saves a checkpoint (recording what the logger had then),
    or raises."""

    def __init__(self, at: int, what: str, path=None) -> None:
        self.at, self.what, self.path = at, what, path
        self.seen_at_save: list[int] | None = None

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step != self.at:
            return
        if self.what == "raise":
            raise RuntimeError("stop here")
        trainer.save_checkpoint(self.path)
        self.seen_at_save = list(trainer.logger.diag())


def fit(tmp_path, *callbacks, steps=20):
    logger = RecordingLogger()
    diag = OptimizerDiagnostics(log_every_n_steps=1, histogram_every_n_steps=0, flush_every_s=1e6)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=logger,
        callbacks=[diag, *callbacks],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return trainer, logger


def test_the_trainer_logs_every_waiting_step_by_a_checkpoint_and_by_the_end(tmp_path):
    at = AtStep(6, "save", tmp_path / "mid.ckpt")
    trainer, logger = fit(tmp_path, at)
    trainer.fit(Regression())
    assert at.seen_at_save == list(range(1, 7))  # a resume from it continues the charts
    assert list(logger.diag()) == list(range(1, 21))


def test_an_exception_still_logs_the_steps_before_it(tmp_path):
    trainer, logger = fit(tmp_path, AtStep(5, "raise"))
    with pytest.raises(RuntimeError, match="stop here"):
        trainer.fit(Regression())
    assert list(logger.diag()) == [1, 2, 3, 4, 5]


def test_the_accelerator_read_splits_its_one_transfer_as_the_cpu_read_does():
    """``to_host``'s accelerator branch (one float64 transfer for all waiting steps) gives
    what its CPU branch gives: it runs on CPU tensors too, so it is checked without a GPU."""
    from callbacks.stats import _by_one_transfer, to_host

    g = torch.Generator().manual_seed(0)
    for steps, extras in ((3, 2), (2, 0), (1, 1)):
        packed = [torch.randn(9, generator=g, dtype=torch.float64) for _ in range(steps)]
        extra = [[torch.rand((), generator=g) for _ in range(extras)] for _ in range(steps)]
        counts = [
            torch.randint(0, 99, (512,), generator=g, dtype=torch.int32) for _ in range(steps)
        ]
        values, hist = to_host(packed, extra, counts)
        assert values.shape == (steps, 9 + extras) and hist.shape == (steps, 512)
        flat = [t for step in extra for t in step]
        by_transfer = _by_one_transfer(packed, flat, counts)
        assert by_transfer[0].tolist() == values.tolist()
        assert by_transfer[1].tolist() == hist.tolist()
        assert values[:, 9:].tolist() == [[float(t) for t in step] for step in extra]
