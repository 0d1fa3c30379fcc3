"""What OptimizerDiagnostics costs: training on fake data with and without it, per network.

    python benchmarks/diagnostics_overhead.py [--nets logreg mlp cifarnet] [--batch-size 128
        --pairs 3 --threads 1]

For each network and each log_every_n_steps in 1, 10 and 50, one fit (CSVLogger, fake
MNIST- or CIFAR-10-shaped uint8 images served by the resident path's ``ResidentLoader``, as
the datamodules do by default) alternates blocks of steps without and with the callback's hooks attached:
off, on, off, on, ..., off, each block a multiple of log_every_n_steps long. An on block is
compared with the mean of its two neighbouring off blocks, so slow drift in machine load (other
processes on a shared machine) cancels; the median of these ratios is printed. The time spent
inside the hooks is also measured directly: it is the added work, and less noisy than any
difference of wall-clock times. It includes the host's reading of the logging steps (the
callback's ``flush_every_s``, ``--flush-every-s``: batches of them, read in on blocks). Targets: <= 1.02x at 50, <= 1.3x at every step. The
logistic regression's step is ~1 ms, so its blocks are short: use more ``--pairs`` there.
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

import callbacks.probe
from callbacks import OptimizerDiagnostics
from datamodules.resident import ResidentImages, ResidentLoader
from lit_amsgrad.models.networks import build_network
from lit_amsgrad.optim import AMSGrad

SHAPES = {"logreg": (1, 28, 28), "mlp": (1, 28, 28), "cifarnet": (3, 32, 32)}

SETTINGS = (1, 10, 50)
COMPILE = {"on": True, "off": False, "auto": None}  # --compile: OptimizerDiagnostics(compile=)


class Classifier(pl.LightningModule):
    def __init__(self, net: str, optimizer: str) -> None:
        super().__init__()
        self.net, self.optimizer_name = build_network(net), optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        if self.optimizer_name == "torch_adam":
            return torch.optim.Adam(self.parameters(), lr=1e-3, amsgrad=True)
        return AMSGrad(self.parameters(), lr=3e-4, betas=(0.9, 0.999))


class Blocks(pl.Callback):
    """After ``warmup`` steps, detaches/attaches the diagnostics every ``block`` steps and
    records when each block starts.

    An off block detaches the probes without reading what waits for the host: the batches
    grow across blocks as in a fit that is never paused, and are read in on blocks, when
    ``flush_every_s`` or the batch limit says so (forcing a read at every block end would
    read batches of one or two logging steps at ``log_every_n_steps`` 10 and 50, where a
    fit reads a second's worth at once)."""

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
                probe.attach() if on else pause(probe)

    def on_train_end(self, *args) -> None:  # before the callback's own reads the rest
        self.starts.append(time.perf_counter())


def pause(probe: callbacks.probe.OptimizerProbe) -> None:
    """``probe.detach()`` without its read of the waiting logging steps."""
    probe.flush = lambda: None
    try:
        probe.detach()
    finally:
        del probe.flush


class HookTimer:
    """Accumulates the time spent inside the probes' post-step hooks and their flushes (a
    flush from inside a hook counted once), and counts the hook calls."""

    def __init__(self) -> None:
        self.seconds, self.calls, self._depth = 0.0, 0, 0
        probe = callbacks.probe.OptimizerProbe
        probe._after_step = self.timed(probe._after_step, counts=True)
        probe.flush = self.timed(probe.flush, counts=False)

    def timed(self, method, counts: bool):
        def timed(*args):
            self._depth += 1
            start = time.perf_counter()
            try:
                return method(*args)
            finally:
                self._depth -= 1
                if not self._depth:
                    self.seconds += time.perf_counter() - start
                self.calls += counts

        return timed


def fake_loader(net: str, batch_size: int, batches: int = 8) -> ResidentLoader:
    g = torch.Generator().manual_seed(0)
    n = batch_size * batches
    x = torch.randint(0, 256, (n, *SHAPES[net]), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    channels = SHAPES[net][0]
    images = ResidentImages(x, y, mean=(0.5,) * channels, std=(0.25,) * channels)
    return ResidentLoader(images, batch_size, shuffle=True)


def fit(
    net: str, optimizer: str, batch_size: int, steps: int, callbacks: list[pl.Callback]
) -> None:
    """``steps`` steps of ``net`` on the fake resident data, logged to a throwaway CSVLogger,
    with nothing on but the ``callbacks``."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=steps,
            logger=CSVLogger(tmp),
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(Classifier(net, optimizer), fake_loader(net, batch_size))


def measure(args, net: str, log_every: int, timer: HookTimer) -> dict[str, float]:
    """Seconds per step off and on, the median on/off ratio, and hook seconds per on step."""
    block = max(log_every, 20)
    n_blocks = 2 * args.pairs + 1  # off, on, off, ..., off
    # the warmup includes a logging step and the snapshot step before one: their kernels
    # compile there (compile on), not inside a timed block
    warmup = max(args.warmup, 2 * log_every + 1)
    pl.seed_everything(0, verbose=False)
    diag = OptimizerDiagnostics(
        log_every_n_steps=log_every,
        histogram_every_n_steps=0,
        compile=COMPILE[args.compile],
        flush_every_s=args.flush_every_s,
    )
    blocks = Blocks(diag, warmup, block, timer)
    fit(net, args.optimizer, args.batch_size, warmup + n_blocks * block, [blocks, diag])
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
    parser.add_argument("--nets", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=3, help="on blocks per setting")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--optimizer", choices=["amsgrad", "torch_adam"], default="amsgrad")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument(
        "--flush-every-s",
        type=float,
        default=1.0,
        help="OptimizerDiagnostics(flush_every_s=): 0 reads every logging step as it happens",
    )
    parser.add_argument(
        "--compile",
        choices=list(COMPILE),
        default="on",
        help="the logging step compiled (on), eager (off) or when it pays (auto: these short "
        "fits stay eager)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = HookTimer()
    print(f"batch {args.batch_size}, {args.optimizer}, cpu, {torch.get_num_threads()} threads, "
          f"{args.pairs} on blocks per setting, resident fake data, "
          f"flush_every_s={args.flush_every_s}")  # fmt: skip
    print(
        f"{'net':>9} {'log_every_n_steps':>18} {'off ms/step':>12} {'on ms/step':>11} "
        f"{'ratio':>7} {'hook ms/step':>13} {'hook share':>11}"
    )
    for net in args.nets:
        for n in SETTINGS:
            r = measure(args, net, n, timer)
            print(
                f"{net:>9} {n:>18} {r['off'] * 1e3:12.2f} {r['on'] * 1e3:11.2f} "
                f"{r['ratio']:6.3f}x {r['hook'] * 1e3:13.3f} {r['hook'] / r['off']:10.2%}",
                flush=True,
            )


if __name__ == "__main__":
    main()
