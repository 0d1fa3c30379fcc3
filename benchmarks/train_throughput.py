"""Training images/s of one epoch: the Lightning path against a plain PyTorch loop, per task.

For logistic regression, the MLP and CIFARNET, in one run and one process:

- **plain loop**: the textbook loop over the resident uint8 tensor (index a shuffled batch,
  normalise, forward, cross-entropy, zero_grad, backward, step), same network, initial
  weights and optimizer (the task config's paper-mode AMSGrad);
- **Lightning, resident**: ``ImageClassifier`` and the real datamodule in a ``Trainer``
  (no logger, checkpoints, progress bar or validation: the loop itself);
- **Lightning, train.py callbacks**: the trainer, model and datamodule that ``train.py fit
  --config <task>_amsgrad.yaml`` builds (``AMSGradCLI`` on the shipped config: its
  ``OptimizerDiagnostics``, best and periodic ``ModelCheckpoint``, and what the CLI adds to
  every fit: the interruption checkpoint, the last step's log, the recorded config, atomic
  checkpoint writes), with figure 2's settings: a CSV logger (no W&B, whose cost is at
  logging steps and in its own service process), no progress bar or model summary; one
  epoch without validation, like the other rows;
- **Lightning, per-sample**: ``per_sample=True`` (torchvision's PIL path, DataLoader).

First it measures what a bare ``Trainer`` itself adds per step (a one-weight model on the
same loader, minus the same loop without Lightning), and for each task the ratio that cost
alone allows: plain step / (plain step + Lightning's cost).

Rounds alternate the paths, so a busy machine slows all of them alike; each ratio is
Lightning over plain images/s of the same round, and the median and range over rounds are
printed. The epoch is timed from ``on_train_epoch_start`` to ``on_train_epoch_end``
(setup and the data read are not in it). The data are fake images in the real on-disk
formats unless ``--data-dir`` holds real ones.

    python benchmarks/train_throughput.py [--tasks logreg mlp cifarnet] [--rounds 3]
        [--train-size 20000] [--cifar-train-size 1024] [--threads 1] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from datamodules import CIFAR10DataModule, MNISTDataModule
from lit_amsgrad.hook_dispatch import skip_noop_hooks
from lit_amsgrad.models import ImageClassifier
from lit_amsgrad.optim import AMSGrad

#: net: the shipped config that trains it (configs/tasks/<task>.yaml + optimizers/amsgrad.yaml)
TASK_CONFIGS = {"logreg": "mnist_logreg_amsgrad.yaml", "mlp": "mnist_mlp_amsgrad.yaml",
                "cifarnet": "cifarnet_amsgrad.yaml"}  # fmt: skip
TASKS = {  # net: (datamodule class, the task config's optimizer)
    "logreg": (MNISTDataModule, functools.partial(AMSGrad, lr=1e-2, lr_schedule="inv_sqrt")),
    "mlp": (MNISTDataModule, functools.partial(AMSGrad, lr=1e-3)),
    "cifarnet": (CIFAR10DataModule, functools.partial(AMSGrad, lr=3e-4)),
}
PATHS = (
    "plain loop",
    "Lightning, resident",
    "Lightning, train.py callbacks",
    "Lightning, per-sample",
)


def write_fake_data(root: Path, mnist_train: int, cifar_train: int) -> None:
    """Fake MNIST and CIFAR-10 in the real formats (``tests/fakedata.py``), 5,000 more
    training images each for the held-out split the datamodules take first."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests/
    from tests.fakedata import write_fake_cifar10, write_fake_mnist

    write_fake_mnist(root, n_train=mnist_train + 5000, n_test=10)
    write_fake_cifar10(root, n_per_batch=-(-(cifar_train + 5000) // 5), n_test=10)
    import torchvision.datasets.cifar as cifar  # fake files cannot have the official md5s

    cifar.check_integrity = lambda fpath, md5=None: Path(fpath).is_file()


def datamodule(net: str, data_dir: Path, train_size: int, **kw) -> L.LightningDataModule:
    cls, _ = TASKS[net]
    return cls(data_dir=data_dir, val_size=5000, train_size=train_size, num_workers=0, **kw)


def fresh_model(net: str) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(net=net, optimizer=TASKS[net][1])


def plain_loop(net: str, data_dir: Path, train_size: int, device: str) -> float:
    """Images/s of one epoch of the textbook loop over the resident tensor."""
    dm = datamodule(net, data_dir, train_size)
    dm.setup("fit")
    data = dm.resident(dm.train_set).to(device)
    model = fresh_model(net).net.to(device).train()
    optimizer = TASKS[net][1](model.parameters())
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).to(device)
    _sync(device)
    start = time.perf_counter()
    for first in range(0, len(data), 128):
        index = order[first : first + 128]
        loss = F.cross_entropy(model(data.normalise(data.images[index])), data.labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _sync(device)
    return len(data) / (time.perf_counter() - start)


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        # Lightning skips its per-batch no-op hooks, as train.py's CLI has it skip every
        # callback's: the timer adds nothing to the steps it times, in any row
        skip_noop_hooks([self])

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _sync(pl_module.device.type)
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device.type)
        self.seconds = time.perf_counter() - self.start


def lightning_epoch(net: str, data_dir: Path, train_size: int, device: str, *,
                    per_sample: bool = False) -> float:  # fmt: skip
    """Images/s of one Lightning epoch of ``ImageClassifier`` on the real datamodule."""
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator=device, devices=1, max_epochs=1, logger=False, callbacks=[timer],
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=tmp,
        )  # fmt: skip
        dm = datamodule(net, data_dir, train_size, per_sample=per_sample)
        trainer.fit(fresh_model(net), datamodule=dm)
    return train_size / timer.seconds


def train_py_epoch(net: str, data_dir: Path, train_size: int, device: str) -> float:
    """Images/s of one epoch of what ``train.py fit`` builds from the task's shipped config
    (figure 2's logger and display settings, no validation)."""
    from lit_amsgrad.cli import AMSGradCLI, release_run_lock
    from lit_amsgrad.reproduce import config_args

    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                  "init_args": {"save_dir": tmp, "name": "csv", "version": ""}}  # fmt: skip
        args = [
            *config_args(TASK_CONFIGS[net]),
            f"--trainer.default_root_dir={tmp}", f"--trainer.accelerator={device}",
            "--trainer.devices=1", "--trainer.max_epochs=1", "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0", f"--trainer.logger={json.dumps(logger)}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--data.init_args.data_dir={data_dir}", f"--data.init_args.train_size={train_size}",
            "--data.init_args.val_size=5000", "--data.init_args.num_workers=0",
        ]  # fmt: skip
        try:  # the fit subcommand: what the CLI adds to a fit is only added there
            AMSGradCLI(args=["fit", *args], run_name="train_throughput",
                       trainer_defaults={"callbacks": [timer]})  # fmt: skip
        finally:
            release_run_lock()
    return train_size / timer.seconds


class _OneWeight(L.LightningModule):
    """A model whose step costs nothing: what is left of a Lightning step is Lightning's."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w * batch[0][0, 0, 0, 0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def lightning_own_cost(rounds: int, steps: int = 400) -> list[float]:
    """Seconds per step that a bare Trainer adds to a one-weight model on the resident loader
    (the same loop without Lightning subtracted), one value per round."""
    from datamodules.resident import ResidentImages, ResidentLoader

    images = torch.randint(0, 256, (128 * steps, 1, 28, 28), dtype=torch.uint8)
    data = ResidentImages(images, torch.zeros(len(images), dtype=torch.long), (0.5,), (0.25,))
    costs = []
    for _ in range(rounds + 1):
        timer, model = EpochTimer(), _OneWeight()
        trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, callbacks=[timer],
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)  # fmt: skip
        trainer.fit(model, ResidentLoader(data, 128, shuffle=True))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        start = time.perf_counter()
        for x, _ in ResidentLoader(data, 128, shuffle=True):
            loss = (model.w * x[0, 0, 0, 0]).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        costs.append((timer.seconds - (time.perf_counter() - start)) / steps)
    return costs[1:]  # the first round warms up


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(net: str, data_dir: Path, train_size: int, device: str, rounds: int,
            per_sample: bool) -> dict[str, list[float]]:  # fmt: skip
    runs = {
        PATHS[0]: lambda: plain_loop(net, data_dir, train_size, device),
        PATHS[1]: lambda: lightning_epoch(net, data_dir, train_size, device),
        PATHS[2]: lambda: train_py_epoch(net, data_dir, train_size, device),
    }
    if per_sample:
        runs[PATHS[3]] = lambda: lightning_epoch(net, data_dir, train_size, device, per_sample=True)
    results: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()  # warm-up: first-call costs (imports, allocator, kernels) are not the loop's
    for _ in range(rounds):
        for name, run in runs.items():
            results[name].append(run())
    return results


def report(net: str, results: dict[str, list[float]]) -> None:
    plain = results[PATHS[0]]
    for name, values in results.items():
        line = f"  {name:31s} {statistics.median(values):9.0f} images/s (range {min(values):.0f}-{max(values):.0f})"
        if name != PATHS[0]:
            ratios = [v / p for v, p in zip(values, plain, strict=True)]
            line += f"   ratio {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs of each path")
    parser.add_argument("--train-size", type=int, default=20000, help="MNIST images per epoch")
    parser.add_argument(
        "--cifar-train-size", type=int, default=1024, help="CIFAR-10 images per epoch"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--no-per-sample", action="store_true", help="skip the per-sample path")
    parser.add_argument("--data-dir", type=Path, default=None, help="real data (else fake)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
          f"device {args.device}, batch 128, {args.rounds} rounds")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        if args.data_dir is None:
            write_fake_data(data_dir, args.train_size, args.cifar_train_size)
        own = lightning_own_cost(args.rounds)
        print(f"Lightning's own cost per step (bare Trainer, one-weight model, resident loader): "
              f"{statistics.median(own) * 1e3:.2f} ms (range {min(own) * 1e3:.2f}-{max(own) * 1e3:.2f})")  # fmt: skip
        for net in args.tasks:
            size = args.cifar_train_size if net == "cifarnet" else args.train_size
            print(f"{net}: one epoch of {size} images", flush=True)
            results = measure(net, data_dir, size, args.device, args.rounds, not args.no_per_sample)
            report(net, results)
            step = 128 / statistics.median(results[PATHS[0]])
            ceiling = step / (step + statistics.median(own))
            print(
                f"  plain step {step * 1e3:.2f} ms: Lightning's own cost alone allows {ceiling:.2f}x"
            )


if __name__ == "__main__":
    main()
