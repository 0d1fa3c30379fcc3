"""Small fake MNIST and CIFAR-10 sets in the real on-disk formats, read by torchvision's own code.

``write_fake_mnist(root)`` writes ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
(IDX, uncompressed, as torchvision reads them); ``write_fake_cifar10(root)`` writes the pickled
batches into ``<root>/cifar-10-batches-py/``. Their md5s cannot match the real files, so tests of
CIFAR-10 call ``skip_cifar10_md5(monkeypatch)`` (or run ``CIFAR10_MD5_PATCH`` in a subprocess),
which swaps torchvision's md5 check for an existence check and leaves the loading code alone.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

CIFAR10_MD5_PATCH = (
    "import os, torchvision.datasets.cifar as c; "
    "c.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)"
)


@dataclass
class FakeSplit:
    """Images (N, H, W) or (N, H, W, C) uint8 and labels (N,) int64, as written to disk."""

    images: np.ndarray
    labels: np.ndarray


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format (big-endian magic 0x08 type, then the dimensions)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def write_mnist_raw(root: Path, train: FakeSplit, test: FakeSplit) -> Path:
    """Write two splits as torchvision's MNIST reads them; returns the raw folder."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, split in (("train", train), ("t10k", test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", split.images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", split.labels)
    return raw


def fake_split(n: int, shape: tuple[int, ...], seed: int) -> FakeSplit:
    """Random images whose mean brightness depends on the label, so a model can learn them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    noise = rng.integers(0, 100, size=(n, *shape))
    images = (noise + 15 * labels.reshape(-1, *([1] * len(shape)))).astype(np.uint8)
    return FakeSplit(images, labels)


def write_fake_mnist(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> dict:
    """A fake MNIST (28x28 grey) under ``root``; returns {"train": FakeSplit, "test": FakeSplit}."""
    splits = {
        "train": fake_split(n_train, (28, 28), seed),
        "test": fake_split(n_test, (28, 28), seed + 1),
    }
    write_mnist_raw(root, splits["train"], splits["test"])
    return splits


def _write_cifar_batch(path: Path, split: FakeSplit, label: str) -> None:
    # the real files store each image as 3072 bytes: the red, green and blue planes, row-major
    data = split.images.transpose(0, 3, 1, 2).reshape(len(split.images), -1)
    entry = {
        "batch_label": label,
        "labels": [int(y) for y in split.labels],
        "data": np.ascontiguousarray(data, dtype=np.uint8),
        "filenames": [f"fake_{i}.png" for i in range(len(split.labels))],
    }
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_fake_cifar10(root: Path, n_per_batch: int = 60, n_test: int = 100, seed: int = 0) -> dict:
    """A fake CIFAR-10 (32x32 RGB) under ``root``: five training batches, a test batch, the meta file.

    Returns {"train": FakeSplit (the five batches in order), "test": FakeSplit}.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = [fake_split(n_per_batch, (32, 32, 3), seed + i) for i in range(5)]
    for i, batch in enumerate(batches, start=1):
        _write_cifar_batch(folder / f"data_batch_{i}", batch, f"training batch {i} of 5")
    test = fake_split(n_test, (32, 32, 3), seed + 5)
    _write_cifar_batch(folder / "test_batch", test, "testing batch 1 of 1")
    meta = {"num_cases_per_batch": n_per_batch, "label_names": CIFAR10_CLASSES, "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    train = FakeSplit(
        np.concatenate([b.images for b in batches]), np.concatenate([b.labels for b in batches])
    )
    return {"train": train, "test": test}


def skip_cifar10_md5(monkeypatch) -> None:
    """Make torchvision's CIFAR-10 accept files whose md5 differs from the real ones (it still
    requires every file to exist)."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
