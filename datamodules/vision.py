"""Shared base of the image datamodules: seeded split, global batch under DDP, offline errors."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import VisionDataset
from torchvision.transforms import v2

from datamodules.order import EpochShuffleSampler, ResumableState
from datamodules.resident import ResidentImages, ResidentLoader
from lit_amsgrad.errors import ConfigError

__all__ = ["EpochShuffleSampler", "ResumableDataLoader", "ResumableState", "VisionDataModule"]


class DatasetNotFoundError(RuntimeError):
    """The dataset files are missing and could not be downloaded; the message says where to put them."""


class DatasetFileError(DatasetNotFoundError):
    """A dataset file is there but unusable (truncated, corrupt, not the official one).

    A subclass of ``DatasetNotFoundError`` so that whatever reports unusable data as one line
    reports this too; the message names the file and what is wrong with it.
    """


#: what reading a damaged file raises in torchvision's loaders (pickle, IDX, numpy)
_READ_ERRORS = (
    RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, AssertionError,
    pickle.UnpicklingError,
)  # fmt: skip


class TransformedSubset(Dataset):
    """Indices into one loaded dataset with their own transform, so train and val share one copy in memory."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable | None) -> None:
        self.base = base
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, target = self.base[self.indices[i]]
        if self.transform is not None:
            image = self.transform(image)
        return image, target


def split_indices(
    n: int, val_size: int, train_size: int | None, seed: int, test_size: int = 0
) -> tuple[list[int], list[int], list[int]]:
    """A seeded random (train, val, test) split of range(n); the same on every rank and run.

    The validation split is the first ``val_size`` of one seeded permutation and the test
    split the next ``test_size``, so adding a test split leaves the validation split as it was.
    """
    for name, size in (("val_size", val_size), ("test_size", test_size)):
        if size < 0:
            raise ConfigError(f"{name} must be >= 0, got {size}")
    if train_size is not None and train_size < 1:
        raise ConfigError(f"train_size must be >= 1 or None, got {train_size}")
    wanted = val_size + test_size + (train_size if train_size is not None else 1)
    if wanted > n:
        raise ConfigError(
            f"val_size={val_size}, test_size={test_size} and train_size={train_size} need "
            f"{wanted} examples, the training set has {n}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val = perm[:val_size]
    test = perm[val_size : val_size + test_size]
    rest = perm[val_size + test_size :]
    train = rest if train_size is None else rest[:train_size]
    return train, val, test


class ResumableDataLoader(ResumableState, DataLoader):
    """The per-sample training loader, resumable mid-epoch (single process). Under DDP
    Lightning wraps the sampler for sharding; there the resume is exact at epoch ends only
    (Lightning warns). The resident path's ``ResidentLoader`` shards itself and resumes
    mid-epoch under DDP too."""


class VisionDataModule(L.LightningDataModule):
    """Base for torchvision's MNIST/CIFAR-10: subclasses name the dataset, transforms and files.

    ``batch_size`` is the global batch (the paper's 128); under DDP each of the
    ``trainer.world_size`` processes loads ``batch_size // world_size`` examples per step.

    Two seeds, so that several seeds of one experiment differ in their training order but
    not in what they are scored on: ``split_seed`` draws the train/validation(/test) split,
    ``seed`` the order of the training examples and the augmentation. With ``test_size > 0``
    the test split is held out of the training file too (for data without an official test
    set, or to keep the official one untouched); otherwise it is the official test set.

    By default the images are served from one uint8 tensor on the training device
    (``datamodules.resident``): the same values and order as the per-sample path, 30-70x
    faster. ``per_sample=True`` is torchvision's per-sample path (PIL images,
    ``train_transform``/``eval_transform``, DataLoader workers) for transforms of your own.
    """

    dataset_cls: type[VisionDataset]
    name: str = "dataset"
    #: per-channel mean and std of the training images, for the normalisation
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(
        self,
        data_dir: str | Path = "data",
        batch_size: int = 128,
        val_size: int = 5000,
        train_size: int | None = None,
        seed: int = 0,
        num_workers: int | None = None,
        download: bool = True,
        per_sample: bool = False,
        split_seed: int = 0,
        test_size: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers is None:
            num_workers = default_num_workers()
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.val_size = val_size
        self.train_size = train_size
        self.seed = seed
        self.split_seed = split_seed
        self.test_size = test_size
        self.num_workers = num_workers
        self.download = download
        self.per_sample = per_sample
        self.per_device_batch_size = batch_size
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._resident: dict[int, object] = {}  # the resident tensors, by id of their dataset

    # --- what a subclass provides -------------------------------------------------------
    def train_transform(self) -> Callable:
        """Transform of the training split (augmentation goes here)."""
        return self.eval_transform()

    def eval_transform(self) -> Callable:
        """Transform of the validation and test splits: tensor in [0, 1], normalised."""
        return v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        )

    def missing_files_help(self) -> str:
        """Where the files must be and how to get them, for the offline error."""
        raise NotImplementedError

    def damaged_files(self) -> list[str]:
        """The files that are present but unusable, as "'path' reason"; only the subclass
        knows its formats and checksums. Asked only after loading or downloading failed."""
        return []

    # --- Lightning hooks ----------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download once (Lightning calls this on one process per node)."""
        if not self.download:
            return
        try:
            for train in (True, False):
                self.dataset_cls(str(self.data_dir), train=train, download=True)
        except _READ_ERRORS as err:  # URLError is an OSError; a damaged file fails its load
            raise self._unusable(f"downloading failed: {_last_line(err)}") from None

    def setup(self, stage: str | None = None) -> None:
        self.per_device_batch_size = self._per_device_batch_size()
        held_out_test = self.test_size > 0
        if self.train_set is None and (stage in (None, "fit", "validate") or held_out_test):
            full = self._load(train=True)
            train_idx, val_idx, test_idx = split_indices(
                len(full), self.val_size, self.train_size, self.split_seed, self.test_size
            )
            self.train_set = TransformedSubset(full, train_idx, self.train_transform())
            self.val_set = TransformedSubset(full, val_idx, self.eval_transform())
            if held_out_test:
                self.test_set = TransformedSubset(full, test_idx, self.eval_transform())
        if stage in (None, "test", "predict") and self.test_set is None:
            test = self._load(train=False)
            self.test_set = TransformedSubset(test, range(len(test)), self.eval_transform())

    def train_dataloader(self) -> DataLoader | ResidentLoader:
        return self._loader(self.train_set, shuffle=True)

    def _batches_done(self) -> int:
        """Training batches finished in the current epoch, as the trainer counts them."""
        if self.trainer is None:
            return 0
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return progress.processed

    def val_dataloader(self) -> DataLoader | ResidentLoader | list:
        if self.val_size == 0:
            return []
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader | ResidentLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader | ResidentLoader:
        return self._loader(self.test_set, shuffle=False)

    # --- the resident path ----------------------------------------------------------------
    def as_tensors(self, dataset: VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
        """All images of a loaded torchvision dataset as uint8 (N, C, H, W) and its labels."""
        raise NotImplementedError

    def augment_batches(self) -> bool:
        """Whether the resident training batches get ``crop_and_flip`` (CIFAR-10's augment)."""
        return False

    def resident(self, subset: TransformedSubset) -> ResidentImages:
        """A split as one uint8 tensor on the training device, made once per split."""
        cached = self._resident.get(id(subset))
        if cached is None:
            if id(subset.base) not in self._resident:
                self._resident[id(subset.base)] = self.as_tensors(subset.base)
            images, labels = self._resident[id(subset.base)]
            index = torch.as_tensor(subset.indices, dtype=torch.long)
            cached = ResidentImages(images[index], labels[index], self.mean, self.std)
            self._resident[id(subset)] = cached = cached.to(self._device())
        return cached

    # --- helpers ------------------------------------------------------------------------
    def _per_device_batch_size(self) -> int:
        world_size = getattr(self.trainer, "world_size", 1) if self.trainer is not None else 1
        if self.batch_size % world_size != 0:
            raise ConfigError(
                f"batch_size={self.batch_size} is the global batch and must be divisible by the "
                f"number of processes (trainer.world_size={world_size}); choose a multiple of {world_size}"
            )
        return self.batch_size // world_size

    def _load(self, train: bool) -> VisionDataset:
        try:
            return self.dataset_cls(str(self.data_dir), train=train, transform=None, download=False)
        except _READ_ERRORS as err:
            reason = "download=False" if not self.download else "the files are not there"
            raise self._unusable(f"{reason}: {_last_line(err)}") from None

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader | ResidentLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a loader")
        if not self.per_sample:
            loader = ResidentLoader(
                self.resident(dataset), self.batch_size, shuffle=shuffle, seed=self.seed,
                augment=shuffle and self.augment_batches(),
                rank=getattr(self.trainer, "global_rank", 0) if self.trainer else 0,
                world_size=getattr(self.trainer, "world_size", 1) if self.trainer else 1,
            )  # fmt: skip
            if shuffle:
                loader.batches_done = self._batches_done
            return loader
        loader_cls = ResumableDataLoader if shuffle else DataLoader
        loader = loader_cls(
            dataset,
            batch_size=self.per_device_batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            pin_memory=self._on_cuda(),
            persistent_workers=self.num_workers > 0,
            # its own generator: worker seeds must not draw from the global RNG (dropout)
            generator=torch.Generator().manual_seed(self.seed),
        )
        if shuffle:
            loader.batches_done = self._batches_done
        return loader

    def _device(self) -> torch.device:
        strategy = getattr(self.trainer, "strategy", None) if self.trainer is not None else None
        try:
            return strategy.root_device if strategy is not None else torch.device("cpu")
        except (AttributeError, RuntimeError):  # a strategy not set up yet
            return torch.device("cpu")

    def _on_cuda(self) -> bool:
        accelerator = getattr(self.trainer, "accelerator", None)
        if accelerator is not None:
            return isinstance(accelerator, CUDAAccelerator)
        return torch.cuda.is_available()

    def _unusable(self, reason: str) -> DatasetNotFoundError:
        """A damaged file, named, if one is there; otherwise the files are missing."""
        damaged = self.damaged_files()
        if not damaged:
            return self._not_found(reason)
        more = f" ({len(damaged) - 1} more damaged files)" if len(damaged) > 1 else ""
        return DatasetFileError(
            f"{self.name} file {damaged[0]}{more}; delete it and let download=True fetch it "
            "again, or replace it with the official file"
        )

    def _not_found(self, reason: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"{self.name} not found under '{self.data_dir.resolve()}' ({reason}).\n"
            f"{self.missing_files_help()}"
        )


def default_num_workers() -> int:
    """Up to 4 loader processes, never more than this process may use CPU cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(4, cores)


def _last_line(err: BaseException) -> str:
    """The informative part of torchvision's errors (its download errors end with the cause)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
