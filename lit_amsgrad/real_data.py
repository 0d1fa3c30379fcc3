"""The real images this project's machines have, laid out where torchvision's datasets read them.

    python -m lit_amsgrad.real_data --out DIR [--source ../shared/data]

``../shared/data`` (beside the checkout; a fork will not have it) holds the 10,000 official
MNIST test digits and 4,660 real CIFAR-10 training images (the first 932 of each official
training batch, official pickled format, not the official md5s). Neither is a full training
set, so experiments on them hold out their validation and test splits from the training files
(``data.init_args.test_size``), and CIFAR-10 is read with ``verify_md5=false, download=false``.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from collections.abc import Sequence
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "batches.meta")


def real_mnist(folder: Path, source: Path = SHARED_DATA / "mnist") -> Path | None:
    """The 10,000 digits as torchvision's MNIST training *and* test files under ``folder``
    (its test files must exist for torchvision; hold the test split out of the training file
    with ``test_size``); None when they are absent."""
    if not all((source / f"{name}.gz").is_file() for name in MNIST_FILES):
        return None
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        data = gzip.decompress((source / f"{name}.gz").read_bytes())
        for target in (name, name.replace("t10k", "train")):
            (raw / target).write_bytes(data)
    return folder


def real_cifar10(folder: Path, source: Path = SHARED_DATA / "cifar10") -> Path | None:
    """The 4,660 images as torchvision's CIFAR-10 training batches under ``folder`` (no test
    batch: hold the test split out with ``test_size``); None when they are absent."""
    if not all((source / name).is_file() for name in CIFAR10_FILES):
        return None
    target = folder / "cifar-10-batches-py"
    target.mkdir(parents=True, exist_ok=True)
    for name in CIFAR10_FILES:
        shutil.copyfile(source / name, target / name)
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit_amsgrad.real_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="folder to write the layout into")
    parser.add_argument("--source", type=Path, default=SHARED_DATA, help="default: %(default)s")
    args = parser.parse_args(argv)
    written = {
        "MNIST": real_mnist(args.out, args.source / "mnist"),
        "CIFAR-10": real_cifar10(args.out, args.source / "cifar10"),
    }
    if not any(written.values()):
        raise SystemExit(f"error: no real data under {args.source} (mnist/, cifar10/)")
    for name, folder in written.items():
        print(f"{name}: {folder if folder else f'not in {args.source}'}")


if __name__ == "__main__":
    main()
