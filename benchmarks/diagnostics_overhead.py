"""What OptimizerDiagnostics costs: CIFARNET training on fake data with and without it.

    python benchmarks/diagnostics_overhead.py [--batch-size 128 --pairs 3 --threads 1]

For each log_every_n_steps in 1, 10 and 50, one fit (CSVLogger, in-memory fake CIFAR-10
batches) alternates blocks of steps without and with the callback's hooks attached:
off, on, off, on, ..., off, each block a multiple of log_every_n_steps long. An on block is
compared with the mean of its two neighbouring off blocks, so slow drift in machine load (other
processes on a shared machine) cancels; the median of these ratios is printed. The time spent
inside the hooks is also measured directly: it is the added work, and less noisy than any
difference of wall-clock times. Targets: <= 1.02x at 50, well under 1.5x at every step.
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


class Blocks(pl.Callback):
    """After ``warmup`` steps, detaches/attaches the diagnostics every ``block`` steps and
    records when each block starts."""

    def __init__(self, diag: OptimizerDiagnostics, warmup: int, block: int, timer) -> None:
        self.diag, self.warmup, self.block, self.timer = diag, warmup, block, timer
        self.starts: list[float] = []
        self.hook_at_start = (0.0, 0)

    def on_train_batch_start(self, trainer, *args) -> None:
        done = trainer.global_step - self.warmup
        if done == 0:  # hook time counts from here: warmup's first calls allocate
            self.hook_at_start = (self.timer.seconds, self.timer.calls)
        if done >= 0 and done % self.block == 0:
            self.starts.append(time.perf_counter())
            on = (done // self.block) % 2 == 1
            for probe in self.diag._probes:
                probe.attach() if on else probe.detach()

    def on_train_end(self, *args) -> None:
        self.starts.append(time.perf_counter())


class HookTimer:
    """Accumulates the time spent inside the probes' post-step hooks."""

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0
        original = callbacks.probe.OptimizerProbe._after_step

        def timed(probe, *args):
            start = time.perf_counter()
            original(probe, *args)
            self.seconds += time.perf_counter() - start
            self.calls += 1

        callbacks.probe.OptimizerProbe._after_step = timed


def fake_loader(batch_size: int, batches: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size * batches, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch_size * batches,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def measure(args, log_every: int, timer: HookTimer) -> dict[str, float]:
    """Seconds per step off and on, the median on/off ratio, and hook seconds per on step."""
    block = max(log_every, 20)
    n_blocks = 2 * args.pairs + 1  # off, on, off, ..., off
    pl.seed_everything(0, verbose=False)
    diag = OptimizerDiagnostics(log_every_n_steps=log_every, histogram_every_n_steps=0)
    blocks = Blocks(diag, args.warmup, block, timer)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=args.warmup + n_blocks * block,
            logger=CSVLogger(tmp),
            callbacks=[diag, blocks],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(Classifier(args.optimizer), fake_loader(args.batch_size))
    times = [b - a for a, b in zip(blocks.starts, blocks.starts[1:], strict=False)]
    off, on = times[0::2], times[1::2]
    ratios = [t / ((off[i] + off[i + 1]) / 2) for i, t in enumerate(on)]
    seconds, calls = blocks.hook_at_start
    assert timer.calls - calls == args.pairs * block  # the hooks ran in the on blocks only
    return {
        "off": statistics.median(off) / block,
        "on": statistics.median(on) / block,
        "ratio": statistics.median(ratios),
        "hook": (timer.seconds - seconds) / (timer.calls - calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=3, help="on blocks per setting")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--optimizer", choices=["amsgrad", "torch_adam"], default="amsgrad")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = HookTimer()
    results = {n: measure(args, n, timer) for n in SETTINGS}
    print(
        f"CIFARNET, batch {args.batch_size}, {args.optimizer}, cpu, "
        f"{torch.get_num_threads()} threads, {args.pairs} on blocks per setting"
    )
    print(
        f"{'log_every_n_steps':>18} {'off ms/step':>12} {'on ms/step':>11} {'ratio':>7} "
        f"{'hook ms/step':>13} {'hook share':>11}"
    )
    for n, r in results.items():
        print(
            f"{n:>18} {r['off'] * 1e3:12.1f} {r['on'] * 1e3:11.1f} {r['ratio']:6.3f}x "
            f"{r['hook'] * 1e3:13.2f} {r['hook'] / r['off']:10.2%}"
        )


if __name__ == "__main__":
    main()
