"""Under 2-process CPU DDP the diagnostics are logged once, by rank zero, with 1-process values.

The test launches this file as a script (``python -m tests.test_diagnostics_ddp``) so Lightning's
own DDP launcher starts the second rank, as it would for a user; spawning from inside pytest is
fragile. Each rank records what reaches its loggers in its own file. About 15 s: not marked slow.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH, STEPS, LOG_EVERY = 8, 12, 2


def run_fit(devices: int, out: Path) -> None:
    """Fit a float64 regression on one fixed global batch per step; record loggers per rank."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
    from torch import nn
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from callbacks import OptimizerDiagnostics

    class FileLogger(Logger):
        """Not rank-zero-only on purpose: any rank that logs leaves a trace."""

        name, version = "file", 0

        def log_hyperparams(self, params, *args, **kwargs) -> None:
            pass

        def log_metrics(self, metrics, step=None) -> None:
            with open(out / f"rank{rank_zero_only.rank}.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "metrics": dict(metrics)}) + "\n")

    class Regression(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1)).double()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)  # a mean: DDP's average is global

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.05, amsgrad=True)

        def train_dataloader(self):
            g = torch.Generator().manual_seed(0)
            n = GLOBAL_BATCH * STEPS
            x = torch.randn(n, 5, generator=g, dtype=torch.float64)
            y = x.sum(1, keepdim=True) * torch.linspace(5, 0.1, n, dtype=torch.float64)[:, None]
            # unshuffled (Lightning's own sampler shuffles training data): rank r gets r, r+2,
            # ..., so step k's two half batches together are the one-process batch k
            data, world = TensorDataset(x, y), self.trainer.world_size
            sampler = DistributedSampler(data, world, self.global_rank, shuffle=False)
            return DataLoader(data, batch_size=GLOBAL_BATCH // world, sampler=sampler)

    pl.seed_everything(0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=1,
        use_distributed_sampler=False,
        logger=[FileLogger()],
        callbacks=[OptimizerDiagnostics(log_every_n_steps=LOG_EVERY, histogram_every_n_steps=4)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    trainer.fit(Regression())


def read_diag(path: Path) -> list[tuple[int, dict]]:
    if not path.exists():
        return []
    calls = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        (c["step"], c["metrics"]) for c in calls if any(k.startswith("diag") for k in c["metrics"])
    ]


def launch(devices: int, out: Path) -> None:
    out.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MASTER_PORT=str(port), WANDB_MODE="offline", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "tests.test_diagnostics_ddp", "--devices", str(devices)]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_ddp_logs_once_with_single_process_values(tmp_path):
    launch(1, tmp_path / "single")
    launch(2, tmp_path / "ddp")
    single = read_diag(tmp_path / "single" / "rank0.jsonl")
    ddp = read_diag(tmp_path / "ddp" / "rank0.jsonl")
    assert read_diag(tmp_path / "ddp" / "rank1.jsonl") == []  # rank one computes nothing

    steps = list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert [s for s, _ in single] == steps
    assert [s for s, _ in ddp] == steps  # each logging step once
    for (_, one), (_, two) in zip(single, ddp, strict=True):
        assert set(one) == set(two)
        for key, value in one.items():
            assert two[key] == pytest.approx(value, rel=1e-9, abs=1e-15), key
    assert "diag/gamma_neg_frac" in ddp[-1][1] and "diag/vhat_growth/net.0.weight" in ddp[-1][1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    run_fit(args.devices, args.out)
