"""The device-resident data path: the per-sample path's batches exactly, seeded augmentation
that resumes, DDP shards that are disjoint and cover the epoch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from torchvision.transforms.v2 import functional as TF

from datamodules import CIFAR10DataModule, MNISTDataModule
from datamodules.mnist import MNIST_MEAN, MNIST_STD
from datamodules.resident import ResidentLoader, crop_and_flip, draw_crops, shard
from tests.fakedata import (
    FakeSplit,
    skip_cifar10_md5,
    write_fake_cifar10,
    write_fake_mnist,
    write_mnist_raw,
)
from tests.subprocess_env import offline_env

REPO = Path(__file__).resolve().parents[1]


def _datamodule(kind: str, root: Path, monkeypatch, **kw):
    if kind == "mnist":
        write_fake_mnist(root, n_train=300, n_test=70)
        cls = MNISTDataModule
    else:
        skip_cifar10_md5(monkeypatch)
        write_fake_cifar10(root, n_per_batch=60, n_test=70)
        cls = CIFAR10DataModule
    kw = {"batch_size": 32, "val_size": 50, "num_workers": 0, "seed": 3, **kw}
    return cls(data_dir=root, **kw)


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.parametrize("kind", ["mnist", "cifar10"])
def test_resident_batches_equal_the_per_sample_path_bit_for_bit(kind, tmp_path, monkeypatch):
    resident = _datamodule(kind, tmp_path, monkeypatch)
    per_sample = _datamodule(kind, tmp_path, monkeypatch, per_sample=True)
    for dm in (resident, per_sample):
        dm.setup("fit")
        dm.setup("test")
    fast, slow = resident.train_dataloader(), per_sample.train_dataloader()
    assert isinstance(fast, ResidentLoader) and len(fast) == len(slow)
    for epoch in (0, 1):
        fast.sampler.set_epoch(epoch)
        slow.sampler.set_epoch(epoch)
        ours, theirs = _batches(fast), _batches(slow)
        assert len(ours) == len(theirs) == len(slow)
        for (x, y), (u, v) in zip(ours, theirs, strict=True):
            assert x.dtype == u.dtype == torch.float32 and x.shape == u.shape
            assert torch.equal(x, u) and torch.equal(y, v)
    for ours, theirs in ((resident.val_dataloader(), per_sample.val_dataloader()),
                         (resident.test_dataloader(), per_sample.test_dataloader())):  # fmt: skip
        for (x, y), (u, v) in zip(_batches(ours), _batches(theirs), strict=True):
            assert torch.equal(x, u) and torch.equal(y, v)


def test_crop_and_flip_is_torchvision_crop_of_the_padded_image_and_hflip():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    shifts, flips = draw_crops(6, torch.Generator().manual_seed(0))
    flips[:3] = torch.tensor([True, False, True])
    out = crop_and_flip(images, shifts, flips)
    for i in range(6):
        padded = TF.pad(images[i], [4, 4, 4, 4], fill=0)
        want = TF.crop(padded, int(shifts[i, 0]), int(shifts[i, 1]), 32, 32)
        if flips[i]:
            want = TF.horizontal_flip(want)
        assert torch.equal(out[i], want), i


def test_augmentation_is_seeded_per_epoch_and_resumes_exactly(tmp_path, monkeypatch):
    dm = _datamodule("cifar10", tmp_path, monkeypatch, augment=True)
    dm.setup("fit")
    plain = _datamodule("cifar10", tmp_path, monkeypatch, augment=False)
    plain.setup("fit")
    loader = dm.train_dataloader()
    first, again = _batches(loader), _batches(dm.train_dataloader())
    for (x, y), (u, v) in zip(first, again, strict=True):
        assert torch.equal(x, u) and torch.equal(y, v)  # the same seed draws the same
    unaugmented = _batches(plain.train_dataloader())
    assert all(torch.equal(y, v) for (_, y), (_, v) in zip(first, unaugmented, strict=True))
    assert not torch.equal(first[0][0], unaugmented[0][0])  # but the images are augmented
    loader.sampler.set_epoch(1)
    assert not torch.equal(_batches(loader)[0][0], first[0][0])  # another epoch, other draws
    # resumed after 3 batches of epoch 1: the rest of the epoch as the uninterrupted loader
    loader.sampler.set_epoch(1)
    whole = _batches(loader)
    resumed = dm.train_dataloader()
    resumed.load_state_dict({"epoch": 1, "batches_done": 3})
    tail = _batches(resumed)
    assert len(tail) == len(whole) - 3
    for (x, y), (u, v) in zip(tail, whole[3:], strict=True):
        assert torch.equal(x, u) and torch.equal(y, v)


@pytest.mark.parametrize(("n", "world_size"), [(250, 2), (256, 4), (7, 3)])
def test_shards_of_every_batch_are_disjoint_and_cover_it(n, world_size):
    order = torch.randperm(n)
    for start in range(0, n, 64):
        batch = order[start : start + 64]
        parts = [shard(batch, r, world_size) for r in range(world_size)]
        assert torch.equal(torch.cat(parts), batch)  # disjoint, in order, covering
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


class RecordIndices(Callback):
    """Writes, per rank, the example numbers (encoded in the first two pixels) of every
    training batch: ``<dir>/rank<r>.json``."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath, self.seen = Path(dirpath), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        pixels = (batch[0][:, 0, 0, :2] * MNIST_STD[0] + MNIST_MEAN[0]) * 255
        codes = pixels.round().long()
        self.seen.append((codes[:, 0] * 256 + codes[:, 1]).tolist())

    def on_train_end(self, trainer, pl_module) -> None:
        path = self.dirpath / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps({"world": trainer.world_size, "batches": self.seen}))


@pytest.mark.slow
def test_ddp_shards_are_disjoint_and_cover_the_epoch(tmp_path):
    """Two processes (CPU, gloo) through train.py: each example of the epoch once, on one rank."""
    n_train, val = 700, 60
    images = np.random.default_rng(0).integers(0, 256, (n_train, 28, 28)).astype(np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(n_train) // 256, np.arange(n_train) % 256
    labels = np.arange(n_train) % 10
    test = FakeSplit(images[:20].copy(), labels[:20].copy())
    write_mnist_raw(tmp_path / "data", FakeSplit(images, labels), test)
    command = [
        sys.executable, str(REPO / "train.py"), "fit", "--config", "mnist_logreg_amsgrad.yaml",
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
        "--data.data_dir=data", "--data.num_workers=0", f"--data.val_size={val}",
        "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
        f"--trainer.callbacks+={__name__}.RecordIndices",
        f"--trainer.callbacks.dirpath={tmp_path}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=offline_env(), capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == -(-(n_train - val) // 128)
    seen = [i for r in ranks for batch in r["batches"] for i in batch]
    assert len(seen) == len(set(seen)) == n_train - val  # disjoint and covering
    held_out = set(range(n_train)) - set(seen)
    assert len(held_out) == val
    for step in range(len(ranks[0]["batches"])):  # each global batch split between the ranks
        sizes = [len(r["batches"][step]) for r in ranks]
        assert abs(sizes[0] - sizes[1]) <= 1


SHARED = REPO.parent / "shared" / "data"


def _real(kind: str, root: Path, monkeypatch) -> Path:
    """The shared real images in torchvision's layout under ``root``, or a skip naming why."""
    import gzip
    import shutil

    if kind == "mnist":
        names = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
        if not all((SHARED / "mnist" / f"{n}.gz").is_file() for n in names):
            pytest.skip(
                f"real MNIST digits not found in {SHARED / 'mnist'} (project machines only)"
            )
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name in names:
            data = gzip.decompress((SHARED / "mnist" / f"{name}.gz").read_bytes())
            (raw / name).write_bytes(data)
            (raw / name.replace("t10k", "train")).write_bytes(data)
        return root
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"]
    if not all((SHARED / "cifar10" / f).is_file() for f in files):
        pytest.skip(
            f"real CIFAR-10 images not found in {SHARED / 'cifar10'} (project machines only)"
        )
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in files:
        shutil.copy(SHARED / "cifar10" / name, folder / name)
    shutil.copy(folder / "data_batch_5", folder / "test_batch")  # none shared; not used here
    skip_cifar10_md5(monkeypatch)  # the shared files are a subset: not the official md5s
    return root


@pytest.mark.parametrize("kind", ["mnist", "cifar10"])
def test_resident_batches_equal_the_per_sample_path_on_real_images(kind, tmp_path, monkeypatch):
    root = _real(kind, tmp_path / "data", monkeypatch)
    cls = MNISTDataModule if kind == "mnist" else CIFAR10DataModule
    kw = {"batch_size": 128, "val_size": 500, "train_size": 1000, "num_workers": 0, "seed": 1}
    resident, per_sample = cls(root, **kw), cls(root, per_sample=True, **kw)
    for dm in (resident, per_sample):
        dm.setup("fit")
    fast, slow = resident.train_dataloader(), per_sample.train_dataloader()
    fast.sampler.set_epoch(2)
    slow.sampler.set_epoch(2)
    for (x, y), (u, v) in zip(fast, slow, strict=True):
        assert torch.equal(x, u) and torch.equal(y, v)
    for (x, y), (u, v) in zip(resident.val_dataloader(), per_sample.val_dataloader(), strict=True):
        assert torch.equal(x, u) and torch.equal(y, v)
