"""Device-resident image data: one uint8 tensor, batches by indexing, normalised on the device.

MNIST and CIFAR-10 are small (47 MB and 150 MB as uint8) and the paper's networks are fast,
so torchvision's per-sample path (PIL image, transforms, collate, worker processes) is what
bounds an epoch: 2,400-4,700 images/s against 100,000+ for the logistic regression. Here the
images are read once (with torchvision's dataset classes, so formats, md5 checks and the
download stay theirs), kept as one uint8 tensor on the training device, and a batch is an
index into it, converted with the very operations torchvision's ``ToDtype(scale=True)`` and
``Normalize`` apply, so the values are the same bit for bit.

The order is ``EpochShuffleSampler``'s (a function of seed and epoch). Under DDP every
process draws the same epoch order and takes its own slice of each global batch, so the
shards of an epoch are disjoint and cover it. CIFAR-10's augmentation (random crop with zero
padding, horizontal flip) runs batched on the device with draws from a generator seeded by
(seed, epoch, batch), so it is reproducible and a resumed run draws what an uninterrupted one
draws.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from datamodules.order import EpochShuffleSampler, ResumableState


class ResidentImages:
    """Images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64 on one device, with the
    normalisation of their split."""

    def __init__(self, images: Tensor, labels: Tensor, mean: Sequence[float],
                 std: Sequence[float]) -> None:  # fmt: skip
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        self.images, self.labels = images, labels
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> ResidentImages:
        device = torch.device(device)
        if self.images.device == device:
            return self
        return ResidentImages(self.images.to(device), self.labels.to(device),
                              self.mean.flatten().tolist(), self.std.flatten().tolist())  # fmt: skip

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 -> float32 as torchvision's ToDtype(scale=True) then Normalize, op for op."""
        return images.to(torch.float32).mul_(1.0 / 255).sub_(self.mean).div_(self.std)


def draw_crops(n: int, generator: torch.Generator, padding: int = 4) -> tuple[Tensor, Tensor]:
    """The random part of ``crop_and_flip`` for ``n`` images: offsets (n, 2) in
    [0, 2 * padding] and flips (n,), drawn on the CPU so that every device draws the same."""
    shifts = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator).lt(0.5)
    return shifts, flips


def crop_and_flip(images: Tensor, shifts: Tensor, flips: Tensor, padding: int = 4) -> Tensor:
    """Crops of the zero-padded images at ``shifts`` and horizontal flips where ``flips``,
    for a whole batch at once, where the images are."""
    _, _, height, width = images.shape
    shifts, flips = shifts.to(images.device), flips.to(images.device)
    n = len(images)
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    rows = shifts[:, :1] + torch.arange(height, device=images.device)  # (n, H)
    cols = shifts[:, 1:] + torch.arange(width, device=images.device)  # (n, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # (n, H, W, C) from advanced indexing, back to (n, C, H, W)
    crops = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2).contiguous()


def shard(indices: Tensor, rank: int, world_size: int) -> Tensor:
    """This process's part of one global batch: ``tensor_split``, so the parts are disjoint
    and cover it (sizes differ by at most one on a last, short batch)."""
    return torch.tensor_split(indices, world_size)[rank]


class ResidentLoader(ResumableState):
    """Batches of a ``ResidentImages``: normalised images and labels, already on its device.

    ``global_batch_size`` is the global batch; this process yields its ``shard`` of each
    (``batch_size`` examples, the global batch over the world size). With
    ``shuffle`` the order is ``sampler``'s, and Lightning's ``set_epoch`` reaches it through
    ``self.sampler`` as for a DataLoader; resumable mid-epoch as ``ResumableDataLoader``.
    """

    def __init__(self, data: ResidentImages, global_batch_size: int, *, shuffle: bool,
                 seed: int = 0, augment: bool = False, rank: int = 0,
                 world_size: int = 1) -> None:  # fmt: skip
        self.data, self.global_batch_size, self.shuffle = data, global_batch_size, shuffle
        self.batch_size = global_batch_size // world_size
        self.seed, self.augment, self.rank, self.world_size = seed, augment, rank, world_size
        self.sampler = EpochShuffleSampler(len(data), seed) if shuffle else None
        self.batch_sampler = None  # what Lightning's DataLoader checks look for

    def __len__(self) -> int:
        return -(-len(self.data) // self.global_batch_size)

    def examples_per_batch(self) -> int:
        return self.global_batch_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.sampler is None:
            order, epoch, skip = torch.arange(len(self.data)), 0, 0
        else:
            epoch = self.sampler.epoch
            skip = self.sampler.take_skip()
            order = self.sampler.order()
        order = order.to(self.data.images.device)
        for start in range(skip, len(order), self.global_batch_size):
            batch = order[start : start + self.global_batch_size]
            if self.world_size == 1:
                part, mine = slice(None), batch
            else:
                part = shard(torch.arange(len(batch)), self.rank, self.world_size)
                mine = batch[part.to(batch.device)]
            images = self.data.images[mine]
            if self.augment:
                # drawn for the global batch, so a world size does not change them
                shifts, flips = draw_crops(
                    len(batch), self._generator(epoch, start // self.global_batch_size)
                )
                images = crop_and_flip(images, shifts[part], flips[part])
            yield self.data.normalise(images), self.data.labels[mine]

    def _generator(self, epoch: int, batch_index: int) -> torch.Generator:
        # one stream per (seed, epoch, global batch): the same on every rank, and a resumed
        # epoch draws what the uninterrupted one drew
        return torch.Generator().manual_seed(
            (self.seed * 1_000_003 + epoch) * 1_000_003 + batch_index
        )
