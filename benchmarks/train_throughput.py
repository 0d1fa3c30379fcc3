"""CIFARNET training throughput: the Lightning path of train.py against a plain PyTorch loop.

Both paths train the same network from the same initial weights with the same optimizer
(paper-mode AMSGrad, lr 3e-4), batch (128) and in-memory CIFAR-sized data. They run
interleaved step by step in one process, so a busy machine slows both alike: a callback at the
end of every Lightning step runs one step of the plain loop. A Lightning step is timed from the
end of the previous plain step to the end of its own batch, so it includes everything the
Trainer does between batches (fetching, hooks, logging, the optimizer closure).

    python benchmarks/train_throughput.py --steps 40 --warmup 5
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lit_amsgrad.models import ImageClassifier
from lit_amsgrad.optim import AMSGrad

OPTIMIZER = functools.partial(AMSGrad, lr=3e-4, betas=(0.9, 0.999), bias_correction="none")


def fake_cifar_loader(steps: int, batch_size: int) -> DataLoader:
    """Random 3x32x32 images (already normalised) and labels, enough for ``steps`` batches."""
    g = torch.Generator().manual_seed(0)
    n = steps * batch_size
    images = torch.randn(n, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=True)


def fresh_model() -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(net="cifarnet", optimizer=OPTIMIZER)


class PlainLoop:
    """The textbook loop, one step at a time: fetch, forward, cross-entropy, zero_grad, backward, step."""

    def __init__(self, loader: DataLoader) -> None:
        self.net = fresh_model().net.train()
        self.optimizer = OPTIMIZER(self.net.parameters())
        self.batches: Iterator = iter(loader)

    def step(self) -> None:
        x, y = next(self.batches)
        loss = F.cross_entropy(self.net(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


class Interleave(L.Callback):
    """After each Lightning step, runs and times one plain step; records both step times."""

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.lightning_s: list[float] = []
        self.plain_s: list[float] = []
        self._mark: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.lightning_s.append(now - self._mark)
        self.plain.step()
        self._mark = time.perf_counter()
        self.plain_s.append(self._mark - now)


def measure(steps: int, batch_size: int) -> Interleave:
    """One Lightning fit() of ``steps`` steps (as train.py builds it) interleaved with the plain loop."""
    loader = fake_cifar_loader(steps, batch_size)
    probe = Interleave(PlainLoop(loader))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_steps=steps, max_epochs=1, logger=CSVLogger(tmp),
            callbacks=[probe], enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            default_root_dir=tmp,
        )  # fmt: skip
        trainer.fit(fresh_model(), train_dataloaders=loader)
    return probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps of each path")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    if not 1 <= args.warmup < args.steps - 1:
        parser.error("need 1 <= --warmup < --steps - 1")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    print(
        f"CIFARNET, AMSGrad (paper mode), batch {args.batch_size}, {args.steps} steps each, "
        f"first {args.warmup} not timed, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    probe = measure(args.steps, args.batch_size)
    # lightning_s[i] is Lightning step i + 1 (step 0 has no previous plain step to time from)
    lightning_s = probe.lightning_s[args.warmup - 1 :]
    plain_s = probe.plain_s[args.warmup :]
    for name, times in (("plain loop", plain_s), ("Lightning path", lightning_s)):
        print(
            f"{name:15s}: {args.batch_size / statistics.median(times):7.1f} images/s median, "
            f"{args.batch_size * len(times) / sum(times):7.1f} images/s mean over {len(times)} steps"
        )
    median_ratio = statistics.median(plain_s) / statistics.median(lightning_s)
    mean_ratio = sum(plain_s) / len(plain_s) / (sum(lightning_s) / len(lightning_s))
    print(
        f"ratio Lightning/plain: {median_ratio:.3f} (medians), {mean_ratio:.3f} (means); target >= 0.9"
    )


if __name__ == "__main__":
    main()
