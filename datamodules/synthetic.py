"""The stream of rounds for the synthetic problems: batches of consecutive round indices."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import Dataset

from lit_amsgrad.errors import ConfigError


class RoundChunks(Dataset):
    """Item i is the rounds i*R+1 .. min((i+1)*R, N) (1-based), in order."""

    def __init__(self, num_rounds: int, rounds_per_step: int) -> None:
        self.num_rounds, self.rounds_per_step = num_rounds, rounds_per_step

    def __len__(self) -> int:
        return -(-self.num_rounds // self.rounds_per_step)

    def __getitem__(self, index: int) -> torch.Tensor:
        start = index * self.rounds_per_step + 1
        stop = min(start + self.rounds_per_step, self.num_rounds + 1)
        return torch.arange(start, stop)


class RoundLoader:
    """The chunks in order, resumable.

    Lightning saves ``state_dict()`` in checkpoints, so a run resumed mid-epoch continues
    with the next unplayed round instead of replaying round 1. The position comes from
    ``rounds_played`` (the model's own count), not from this iterator, which Lightning
    reads one batch ahead.
    """

    def __init__(self, chunks: RoundChunks, rounds_played: Callable[[], int]) -> None:
        self.chunks = chunks
        self.rounds_played = rounds_played
        self._resume_chunk = 0

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[torch.Tensor]:
        start, self._resume_chunk = self._resume_chunk, 0
        for index in range(start, len(self.chunks)):
            yield self.chunks[index]

    def state_dict(self) -> dict[str, int]:
        return {"rounds_played": int(self.rounds_played())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        played_in_epoch = state["rounds_played"] % self.chunks.num_rounds
        self._resume_chunk = played_in_epoch // self.chunks.rounds_per_step


class SyntheticConvexDataModule(LightningDataModule):
    """``num_rounds`` rounds per epoch, ``rounds_per_step`` of them per training step.

    Each round is one optimizer step of ``SyntheticConvexModule``; batching rounds keeps
    Lightning's per-step overhead off the 1-D problem (10^5 rounds run in seconds).
    """

    def __init__(self, num_rounds: int = 100_000, rounds_per_step: int = 1000) -> None:
        super().__init__()
        if num_rounds < 1:
            raise ConfigError(f"num_rounds must be >= 1, got {num_rounds}")
        if rounds_per_step < 1:
            raise ConfigError(f"rounds_per_step must be >= 1, got {rounds_per_step}")
        self.save_hyperparameters()

    def train_dataloader(self) -> RoundLoader:
        chunks = RoundChunks(self.hparams.num_rounds, self.hparams.rounds_per_step)
        return RoundLoader(chunks, self._rounds_played)

    def _rounds_played(self) -> int:
        module = self.trainer.lightning_module if self.trainer is not None else None
        return int(getattr(module, "rounds_played", 0))
