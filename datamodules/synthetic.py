"""The stream of rounds for the synthetic problems: batches of consecutive round indices."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset


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


class SyntheticConvexDataModule(LightningDataModule):
    """``num_rounds`` rounds per epoch, ``rounds_per_step`` of them per training step.

    Each round is one optimizer step of ``SyntheticConvexModule``; batching rounds keeps
    Lightning's per-step overhead off the 1-D problem (10^5 rounds run in seconds).
    """

    def __init__(self, num_rounds: int = 100_000, rounds_per_step: int = 1000) -> None:
        super().__init__()
        if num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1, got {num_rounds}")
        if rounds_per_step < 1:
            raise ValueError(f"rounds_per_step must be >= 1, got {rounds_per_step}")
        self.save_hyperparameters()

    def train_dataloader(self) -> DataLoader:
        chunks = RoundChunks(self.hparams.num_rounds, self.hparams.rounds_per_step)
        return DataLoader(chunks, batch_size=None, shuffle=False)
