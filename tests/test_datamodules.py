"""MNIST/CIFAR-10 datamodules on fake sets in the real formats, through torchvision's loaders."""

from __future__ import annotations

import gzip
import os
import urllib.request
from types import SimpleNamespace
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.utils as tv_utils

from datamodules import CIFAR10DataModule, MNISTDataModule
from datamodules.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from datamodules.mnist import MNIST_MEAN, MNIST_STD
from datamodules.vision import DatasetNotFoundError, split_indices
from tests.fakedata import skip_cifar10_md5, write_fake_cifar10, write_fake_mnist


@pytest.fixture
def fake_mnist(tmp_path):
    return tmp_path, write_fake_mnist(tmp_path, n_train=300, n_test=100)


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    skip_cifar10_md5(monkeypatch)
    return tmp_path, write_fake_cifar10(tmp_path, n_per_batch=60, n_test=100)


def _mnist(root, **kw) -> MNISTDataModule:
    kw = {"batch_size": 32, "val_size": 50, "num_workers": 0, **kw}
    return MNISTDataModule(data_dir=root, **kw)


def _cifar(root, **kw) -> CIFAR10DataModule:
    kw = {"batch_size": 32, "val_size": 50, "num_workers": 0, **kw}
    return CIFAR10DataModule(data_dir=root, **kw)


def test_mnist_shapes_dtypes_and_split_sizes(fake_mnist):
    root, _ = fake_mnist
    dm = _mnist(root)
    dm.prepare_data()  # files present: must not touch the network
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (250, 50, 100)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.int64
    assert len(dm.test_dataloader()) == 4  # 100 images in batches of 32, last one partial


def test_mnist_normalisation_matches_the_written_pixels(fake_mnist):
    root, splits = fake_mnist
    dm = _mnist(root)
    dm.setup("test")
    for i in (0, 17, 99):
        image, label = dm.test_set[i]
        expected = (splits["test"].images[i] / 255.0 - MNIST_MEAN[0]) / MNIST_STD[0]
        torch.testing.assert_close(image[0], torch.tensor(expected, dtype=torch.float32))
        assert label == splits["test"].labels[i]


def test_cifar10_shapes_normalisation_and_split(fake_cifar):
    root, splits = fake_cifar
    dm = _cifar(root, train_size=200)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (200, 50, 100)
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    image, label = dm.test_set[5]
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
    hwc = torch.tensor(splits["test"].images[5], dtype=torch.float32)
    torch.testing.assert_close(image, (hwc.permute(2, 0, 1) / 255.0 - mean) / std)
    assert label == splits["test"].labels[5]


def test_validation_split_is_seeded_and_disjoint(fake_mnist):
    root, splits = fake_mnist

    def split_labels(split_seed):
        dm = _mnist(root, split_seed=split_seed)
        dm.setup("fit")
        return dm.train_set.indices, dm.val_set.indices

    train_a, val_a = split_labels(split_seed=0)
    train_b, val_b = split_labels(split_seed=0)
    train_c, val_c = split_labels(split_seed=1)
    assert (train_a, val_a) == (train_b, val_b)
    assert val_a != val_c
    assert not set(train_a) & set(val_a)
    assert sorted(train_a + val_a) == list(range(len(splits["train"].labels)))


@pytest.mark.parametrize("per_sample", [False, True])
def test_seed_changes_the_training_order_but_not_the_split(per_sample, fake_mnist):
    """Several seeds of one experiment are scored on the same examples (#15)."""
    root, _ = fake_mnist

    def run(seed):
        dm = _mnist(root, seed=seed, test_size=40, per_sample=per_sample)
        dm.setup("fit")
        first_batch = next(iter(dm.train_dataloader()))[1]
        return dm.train_set.indices, dm.val_set.indices, dm.test_set.indices, first_batch

    train_0, val_0, test_0, batch_0 = run(seed=0)
    train_1, val_1, test_1, batch_1 = run(seed=1)
    assert (train_0, val_0, test_0) == (train_1, val_1, test_1)
    assert not torch.equal(batch_0, batch_1)


def test_held_out_test_split_comes_from_the_training_file(fake_mnist):
    root, splits = fake_mnist
    dm = _mnist(root, test_size=40, train_size=100)
    dm.setup("test")  # the test split alone is enough to ask for
    assert len(dm.test_set) == 40 and dm.test_set.base.train
    dm.setup("fit")
    train, val, test = (set(s.indices) for s in (dm.train_set, dm.val_set, dm.test_set))
    assert (len(train), len(val)) == (100, 50)
    assert not (train & val or train & test or val & test)
    # the validation split is the one without a test split: adding one leaves it alone
    assert dm.val_set.indices == _split_of(root, test_size=0).val_set.indices
    x, y = next(iter(dm.test_dataloader()))
    written = torch.as_tensor(splits["train"].labels)[dm.test_set.indices[: len(y)]]
    assert torch.equal(y, written.long())


def _split_of(root, **kw):
    dm = _mnist(root, **kw)
    dm.setup("fit")
    return dm


def test_split_sizes_are_checked():
    with pytest.raises(ValueError, match="val_size=90, test_size=0 and train_size=20 need 110"):
        split_indices(100, val_size=90, train_size=20, seed=0)
    with pytest.raises(ValueError, match="test_size must be >= 0"):
        split_indices(100, val_size=10, train_size=None, seed=0, test_size=-1)
    assert [len(s) for s in split_indices(100, val_size=20, train_size=None, seed=0)] == [80, 20, 0]
    sizes = split_indices(100, val_size=20, train_size=None, seed=0, test_size=30)
    assert [len(s) for s in sizes] == [50, 20, 30]


def test_cifar10_augmentation_changes_only_the_training_split(fake_cifar):
    root, _ = fake_cifar
    plain, augmented = _cifar(root), _cifar(root, augment=True)
    for dm in (plain, augmented):
        dm.setup("fit")
    i = 0
    torch.manual_seed(0)
    draws = torch.stack([augmented.train_set[i][0] for _ in range(8)])
    assert not torch.allclose(draws, draws[0].expand_as(draws))  # random crops/flips differ
    torch.testing.assert_close(augmented.val_set[i][0], plain.val_set[i][0])
    torch.testing.assert_close(plain.train_set[i][0], plain.train_set[i][0])


@pytest.mark.parametrize("per_sample", [False, True])
def test_global_batch_is_divided_by_world_size(per_sample, fake_mnist):
    root, _ = fake_mnist
    dm = _mnist(root, batch_size=128, per_sample=per_sample)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)
    dm.setup("fit")
    assert dm.per_device_batch_size == 64
    assert dm.train_dataloader().batch_size == 64
    assert next(iter(dm.train_dataloader()))[0].shape[0] == 64
    # the 50 val images fit in one global batch; the resident path shards it itself (25 per
    # process), the per-sample loader is sharded by Lightning's DistributedSampler later
    assert next(iter(dm.val_dataloader()))[0].shape[0] == (50 if per_sample else 25)


def test_global_batch_not_divisible_by_world_size_raises(fake_mnist):
    root, _ = fake_mnist
    dm = _mnist(root, batch_size=127)
    dm.trainer = SimpleNamespace(world_size=2)
    with pytest.raises(ValueError, match=r"batch_size=127 .*world_size=2"):
        dm.setup("fit")


@pytest.fixture
def no_network(monkeypatch):
    """Every download fails at once, as on a machine without internet."""

    def refuse(*args, **kwargs):
        raise URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.mark.parametrize("download", [True, False])
def test_missing_mnist_offline_names_the_folder_and_files(tmp_path, no_network, download):
    dm = _mnist(tmp_path / "nowhere", download=download)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.prepare_data()
        dm.setup("fit")
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert str((tmp_path / "nowhere" / "MNIST" / "raw").resolve()) in message
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in message
    assert ("no network in this test" in message) == download
    assert ("download=False" in message) == (not download)


def test_missing_cifar10_offline_names_the_folder_and_files(tmp_path, no_network):
    dm = _cifar(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="no network in this test") as info:
        dm.prepare_data()
    message = str(info.value)
    assert str((tmp_path / "cifar-10-batches-py").resolve()) in message
    for name in ("data_batch_5", "test_batch", "batches.meta", "cifar-10-python.tar.gz"):
        assert name in message


def test_mnist_gz_files_are_unpacked_offline(tmp_path, monkeypatch, no_network):
    """The official .gz files in MNIST/raw work without a network: torchvision unpacks them."""
    splits = write_fake_mnist(tmp_path, n_train=80, n_test=20)
    raw = tmp_path / "MNIST" / "raw"
    for path in list(raw.iterdir()):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    # the real .gz files pass torchvision's md5 check; these fake ones need it relaxed
    monkeypatch.setattr(tv_utils, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    dm = _mnist(tmp_path, val_size=10)
    dm.prepare_data()
    dm.setup("test")
    assert np.array_equal(dm.test_set.base.targets.numpy(), splits["test"].labels)


def test_default_workers_never_exceed_the_usable_cores():
    cores = len(os.sched_getaffinity(0))
    assert MNISTDataModule().num_workers == min(4, cores)
    assert CIFAR10DataModule(num_workers=0).num_workers == 0
    with pytest.raises(ValueError, match="num_workers"):
        MNISTDataModule(num_workers=-1)


def test_val_size_zero_trains_on_everything_without_validation(fake_mnist):
    root, splits = fake_mnist
    dm = _mnist(root, val_size=0)
    dm.setup("fit")
    assert len(dm.train_set) == len(splits["train"].labels)
    assert dm.val_dataloader() == []


def test_a_checkpoint_from_before_split_seed_keeps_its_split_on_resume():
    """Before split_seed, ``seed`` drew the split too: resuming such a checkpoint with the
    default split_seed would train on another split, silently; it is refused instead."""
    from lit_amsgrad.resume import settings_differences

    old = {"datamodule_hyper_parameters": {"_class_path": "datamodules.MNISTDataModule",
                                           "seed": 3, "val_size": 50, "batch_size": 32}}  # fmt: skip
    now = {"data": {"class_path": "datamodules.MNISTDataModule",
                    "init_args": {"seed": 3, "val_size": 50, "batch_size": 32, "split_seed": 0}}}  # fmt: skip
    assert settings_differences(old, now, ("data",)) == [
        "data.init_args.split_seed: 3 in the checkpoint, 0 now"
    ]
    now["data"]["init_args"]["split_seed"] = 3
    assert settings_differences(old, now, ("data",)) == []
