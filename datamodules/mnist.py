"""MNIST through torchvision, normalised as usual, for the paper's logistic regression and MLP."""

from __future__ import annotations

import torch
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor
from torchvision.datasets.utils import calculate_md5, check_integrity

from datamodules.vision import VisionDataModule

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class MNISTDataModule(VisionDataModule):
    """MNIST: 60,000 training digits (``val_size`` of them held out, seeded) and 10,000 test digits.

    Args:
        data_dir: root folder; torchvision reads ``<data_dir>/MNIST/raw/``.
        batch_size: the global batch; divided by ``trainer.world_size`` under DDP.
        val_size: training examples held out for validation.
        train_size: train on only this many of the rest (``None``: all of them).
        seed: seed of the training order (and augmentation), independent of ``seed_everything``.
        num_workers: DataLoader worker processes (``None``: up to 4, at most the usable cores).
        download: download in ``prepare_data`` when the files are missing.
        per_sample: torchvision's per-sample path instead of the device-resident tensor.
        split_seed: seed of the train/validation/test split, fixed across ``seed``s.
        test_size: training examples held out as the test split (``split_seed``); 0: the
            official test set.
    """

    dataset_cls = MNIST
    name = "MNIST"
    mean, std = MNIST_MEAN, MNIST_STD

    def as_tensors(self, dataset: MNIST) -> tuple[torch.Tensor, torch.Tensor]:
        return dataset.data.unsqueeze(1), dataset.targets.long()  # (N, 1, 28, 28) uint8

    def damaged_files(self) -> list[str]:
        raw = self.data_dir / "MNIST" / "raw"
        damaged = []
        for name in MNIST_FILES:
            path = raw / name
            if path.is_file():
                try:
                    read_sn3_pascalvincent_tensor(str(path))
                except (AssertionError, RuntimeError, ValueError, KeyError, IndexError) as err:
                    reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                    damaged.append(f"'{path.resolve()}' is not a readable IDX file ({reason})")
        for archive, md5 in MNIST.resources:
            path = raw / archive
            if path.is_file() and not check_integrity(str(path), md5):
                damaged.append(
                    f"'{path.resolve()}' is not the official one (md5 {calculate_md5(str(path))}, "
                    f"expected {md5}): truncated, corrupt or another file"
                )
        return damaged

    def missing_files_help(self) -> str:
        raw = (self.data_dir / "MNIST" / "raw").resolve()
        return (
            f"Without a network, put these four files into {raw}/ :\n"
            f"  {'  '.join(MNIST_FILES)}\n"
            "either unpacked, or as the official .gz files (then keep download=True: torchvision "
            "checks their md5 and unpacks them offline).\n"
            "Get them on a machine with internet with\n"
            f"  python -c \"import torchvision; torchvision.datasets.MNIST('{self.data_dir}', download=True)\"\n"
            f"and copy {self.data_dir}/MNIST/ over, or fetch the .gz files from "
            "https://ossci-datasets.s3.amazonaws.com/mnist/ ."
        )
