"""What OptimizerDiagnostics costs: CIFARNET training on fake data with and without it.

    python benchmarks/diagnostics_overhead.py [--steps 50 --reps 2 --batch-size 128 --threads 1]

One process runs, per repetition, a baseline fit and fits with the callback at
log_every_n_steps 1, 10 and 50 (in rotating order, so drift in machine load spreads evenly), all
with the same CSVLogger, and prints time per step and the ratio to the baseline of the same
repetition (median over repetitions). It also times the callback's own hook, which is less
noisy than the difference of two wall-clock fits on a shared machine (where oversubscribed
intra-op threads can slow everything several-fold: ``--threads 1`` keeps that in check).
Targets: <= 1.02x at 50, well under 1.5x at every step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import callbacks.probe
from callbacks import OptimizerDiagnostics
from lit_amsgrad.models.networks import CIFARNet
from lit_amsgrad.optim import AMSGrad

SETTINGS = (1, 10, 50)


class Classifier(pl.LightningModule):
    def __init__(self, optimizer: str) -> None:
        super().__init__()
        self.net, self.optimizer_name = CIFARNet(), optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        if self.optimizer_name == "torch_adam":
            return torch.optim.Adam(self.parameters(), lr=1e-3, amsgrad=True)
        return AMSGrad(self.parameters(), lr=3e-4, betas=(0.9, 0.999))


class StepClock(pl.Callback):
    """Wall time at the end of every training batch."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, *args) -> None:
        self.ends.append(time.perf_counter())


class HookTimer:
    """Accumulates the time spent inside the probes' post-step hooks."""

    def __init__(self) -> None:
        self.seconds, self._original = 0.0, callbacks.probe.OptimizerProbe._after_step
        timer = self

        def timed(probe, *args):
            start = time.perf_counter()
            timer._original(probe, *args)
            timer.seconds += time.perf_counter() - start

        callbacks.probe.OptimizerProbe._after_step = timed


def fake_loader(batch_size: int, batches: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size * batches, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch_size * batches,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def timed_fit(args, log_every: int | None, timer: HookTimer) -> tuple[float, float]:
    """(seconds per measured step, hook seconds per measured step) of one fit."""
    pl.seed_everything(0, verbose=False)
    clock = StepClock()
    cbs: list[pl.Callback] = [clock]
    if log_every is not None:
        cbs.append(OptimizerDiagnostics(log_every_n_steps=log_every))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator=args.accelerator,
            devices=1,
            max_steps=args.warmup + args.steps,
            logger=CSVLogger(tmp),
            callbacks=cbs,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        loader = fake_loader(args.batch_size, 8)
        hook_before = timer.seconds
        trainer.fit(Classifier(args.optimizer), loader)
    measured = clock.ends[args.warmup - 1 :]  # steps warmup+1 .. warmup+steps
    per_step = (measured[-1] - measured[0]) / args.steps
    return per_step, (timer.seconds - hook_before) / (args.warmup + args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="measured steps per fit")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--optimizer", choices=["amsgrad", "torch_adam"], default="amsgrad")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = HookTimer()
    variants: list[int | None] = [None, *SETTINGS]
    per_step: dict[int | None, list[float]] = {v: [] for v in variants}
    hook: dict[int | None, list[float]] = {v: [] for v in variants}
    ratios: dict[int, list[float]] = {n: [] for n in SETTINGS}
    for rep in range(args.reps):
        order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
        for variant in order:
            step_s, hook_s = timed_fit(args, variant, timer)
            per_step[variant].append(step_s)
            hook[variant].append(hook_s)
        for n in SETTINGS:
            ratios[n].append(per_step[n][-1] / per_step[None][-1])

    print(
        f"CIFARNET, batch {args.batch_size}, {args.optimizer}, {args.accelerator}, "
        f"{torch.get_num_threads()} threads, {args.steps} measured steps x {args.reps} reps"
    )
    base = statistics.median(per_step[None])
    print(
        f"{'log_every_n_steps':>18} {'ms/step':>9} {'ratio':>7} {'hook ms/step':>13} {'hook share':>11}"
    )
    print(f"{'(no callback)':>18} {base * 1e3:9.1f} {1.0:7.3f}")
    for n in SETTINGS:
        step_ms = statistics.median(per_step[n]) * 1e3
        hook_ms = statistics.median(hook[n]) * 1e3
        ratio = statistics.median(ratios[n])
        print(f"{n:>18} {step_ms:9.1f} {ratio:7.3f}x {hook_ms:13.2f} {hook_ms / step_ms:10.2%}")


if __name__ == "__main__":
    main()
