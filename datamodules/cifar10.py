"""CIFAR-10 through torchvision, normalised per channel, for the paper's CIFARNET."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.datasets.cifar as tv_cifar
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import calculate_md5
from torchvision.transforms import v2

from datamodules.vision import VisionDataModule

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_FILES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
    "batches.meta",
)


class CIFAR10DataModule(VisionDataModule):
    """CIFAR-10: 50,000 training images (``val_size`` of them held out, seeded) and 10,000 test images.

    Args:
        data_dir: root folder; torchvision reads ``<data_dir>/cifar-10-batches-py/``.
        batch_size: the global batch; divided by ``trainer.world_size`` under DDP.
        val_size: training examples held out for validation.
        train_size: train on only this many of the rest (``None``: all of them).
        seed: seed of the training order (and augmentation), independent of ``seed_everything``.
        num_workers: DataLoader worker processes (``None``: up to 4, at most the usable cores).
        download: download in ``prepare_data`` when the files are missing.
        augment: random 32x32 crop with 4 pixels of padding and horizontal flips on the
            training split (off in the paper's setting); batched on the device with draws
            seeded by (seed, epoch, batch) on the resident path.
        per_sample: torchvision's per-sample path instead of the device-resident tensor.
        verify_md5: check the files' md5 against the official ones (torchvision's check);
            ``False`` accepts files in the official format with other contents, e.g. a subset
            of CIFAR-10 you made (then the split's files must be there, unchecked).
        split_seed: seed of the train/validation/test split, fixed across ``seed``s.
        test_size: training examples held out as the test split (``split_seed``); 0: the
            official test set.
    """

    dataset_cls = CIFAR10
    name = "CIFAR-10"
    mean, std = CIFAR10_MEAN, CIFAR10_STD

    def __init__(
        self,
        data_dir: str | Path = "data",
        batch_size: int = 128,
        val_size: int = 5000,
        train_size: int | None = None,
        seed: int = 0,
        num_workers: int | None = None,
        download: bool = True,
        augment: bool = False,
        per_sample: bool = False,
        split_seed: int = 0,
        test_size: int = 0,
        verify_md5: bool = True,
    ) -> None:
        super().__init__(
            data_dir, batch_size, val_size, train_size, seed, num_workers, download, per_sample,
            split_seed, test_size,
        )  # fmt: skip
        self.augment = augment
        self.verify_md5 = verify_md5
        if not verify_md5:
            self.dataset_cls = CIFAR10WithoutChecksums

    def as_tensors(self, dataset: CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # HWC -> CHW
        return images, torch.as_tensor(dataset.targets, dtype=torch.long)

    def augment_batches(self) -> bool:
        return self.augment

    def train_transform(self) -> Callable:
        if not self.augment:
            return self.eval_transform()
        return v2.Compose(
            [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), self.eval_transform()]
        )

    def damaged_files(self) -> list[str]:
        folder = self.data_dir / CIFAR10.base_folder
        files = [(folder / name, md5) for name, md5 in CIFAR10.train_list + CIFAR10.test_list]
        files.append((folder / CIFAR10.meta["filename"], CIFAR10.meta["md5"]))
        damaged = [] if not (self.data_dir / CIFAR10.filename).is_file() else [
            _md5_mismatch(self.data_dir / CIFAR10.filename, CIFAR10.tgz_md5)
        ]  # fmt: skip
        for path, md5 in files:
            if path.is_file():
                mismatch = _md5_mismatch(path, md5) if self.verify_md5 else None
                damaged.append(mismatch or _unreadable_pickle(path))
        return [problem for problem in damaged if problem]

    def missing_files_help(self) -> str:
        folder = (self.data_dir / CIFAR10.base_folder).resolve()
        return (
            f"Without a network, put the unpacked Python version of CIFAR-10 into {folder}/ :\n"
            f"  {'  '.join(CIFAR10_FILES)}\n"
            f"or put {CIFAR10.filename} itself into {self.data_dir.resolve()}/ and keep "
            "download=True (torchvision checks its md5 and unpacks it offline).\n"
            f"Get it from {CIFAR10.url} or, on a machine with internet, with\n"
            f"  python -c \"import torchvision; torchvision.datasets.CIFAR10('{self.data_dir}', download=True)\""
        )


class CIFAR10WithoutChecksums(CIFAR10):
    """torchvision's CIFAR10 for files in the official format but not the official bytes
    (``verify_md5=False``): it checks that the split's files are there instead of their md5,
    and reads them with torchvision's own loading code."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        names = [name for name, _ in (self.train_list if self.train else self.test_list)]
        return all((folder / name).is_file() for name in [*names, self.meta["filename"]])

    def _load_meta(self) -> None:
        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
            meta = pickle.load(f, encoding="latin1")
        self.classes = meta[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def _md5_mismatch(path: Path, md5: str) -> str | None:
    # through torchvision's module, so that a test's patch of the check applies here too
    if tv_cifar.check_integrity(str(path), md5):
        return None
    return (
        f"'{path.resolve()}' is not the official one (md5 {calculate_md5(str(path))}, "
        f"expected {md5}): truncated, corrupt or another file (files of your own in the "
        "official format: data.init_args.verify_md5=false)"
    )


def _unreadable_pickle(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, OSError, AttributeError) as err:
        return f"'{path.resolve()}' is not a readable CIFAR-10 pickle ({type(err).__name__}: {err})"
    if not isinstance(entry, dict):
        return f"'{path.resolve()}' is not a CIFAR-10 pickle (holds a {type(entry).__name__})"
    return None
