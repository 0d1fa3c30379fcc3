"""The training order of an epoch and the position a resumed run starts from.

One rule for both data paths: the order is a function of (seed, epoch) only, and a resumed
run leaves out the examples of its epoch that the trainer had already trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """A random order that depends only on (seed, epoch), not on the global RNG.

    Lightning calls ``set_epoch`` at every epoch start, so a run resumed from an epoch-end
    checkpoint sees exactly the orders an uninterrupted run sees.
    """

    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0
        self.skip = 0  # examples of ``skip_epoch`` already trained on (set on a resume)
        self.skip_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        # the full epoch: Lightning counts the resumed epoch's batches from where it stopped
        return self.length

    def order(self) -> torch.Tensor:
        """This epoch's permutation of range(length)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.length, generator=generator)

    def take_skip(self) -> int:
        """Examples to leave out at the start of this pass: only the first pass after a
        resume is shortened, and only if it is the epoch the checkpoint was in (from an
        epoch-end checkpoint the next epoch is a whole one)."""
        skip = self.skip if self.skip_epoch == self.epoch else 0
        self.skip = 0
        return skip

    def __iter__(self) -> Iterator[int]:
        skip = self.take_skip()
        return iter(self.order().tolist()[skip:])


class ResumableState:
    """The resume position of a training loader with an ``EpochShuffleSampler`` as ``sampler``.

    Lightning saves ``state_dict()`` in checkpoints. The position is the number of batches
    the trainer has trained on in this epoch (``batches_done``), not what the loader has
    handed out, since Lightning reads one batch ahead. One batch consumes
    ``examples_per_batch()`` examples of the epoch's order.
    """

    sampler: Sampler | None
    batch_size: int | None
    batches_done: Callable[[], int] = staticmethod(lambda: 0)

    def state_dict(self) -> dict[str, int]:
        sampler = self.sampler
        epoch = sampler.epoch if isinstance(sampler, EpochShuffleSampler) else 0
        return {"epoch": epoch, "batches_done": int(self.batches_done())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.sampler
        if isinstance(sampler, EpochShuffleSampler) and state["batches_done"] > 0:
            sampler.set_epoch(state["epoch"])
            sampler.skip_epoch = state["epoch"]
            skip = state["batches_done"] * self.examples_per_batch()
            sampler.skip = min(skip, sampler.length)

    def examples_per_batch(self) -> int:
        return int(self.batch_size)
