"""``check_replicas``: the DDP replicas' optimizer state agrees (diag/replica_max_abs_diff == 0),
and the checksum comparison gives the right spread when two replicas differ.

Like ``tests.test_diagnostics_ddp`` the 2-process runs launch this file as a script so that
Lightning's own DDP launcher starts the second rank. The same script checks that
``on_nonfinite="stop"`` under DDP saves and stops on both ranks instead of deadlocking.
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
import torch
from torch import nn

from callbacks.replicas import replica_spread, state_checksums

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH, STEPS, LOG_EVERY, PERTURB_AT = 8, 8, 2, 5


def run_fit(devices: int, out: Path, nan_at: int) -> None:
    """A float32 regression under DDP with the replica check on; loggers record per rank.

    Rank one nudges a bias after step PERTURB_AT (DDP never re-broadcasts parameters), so the
    replicas agree up to that step and disagree after it.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
    from torch.utils.data import DataLoader, TensorDataset

    from callbacks import OptimizerDiagnostics

    class FileLogger(Logger):
        name, version = "file", 0

        def log_hyperparams(self, params, *args, **kwargs) -> None:
            pass

        def log_metrics(self, metrics, step=None) -> None:
            with open(out / f"rank{rank_zero_only.rank}.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "metrics": dict(metrics)}) + "\n")

    class Regression(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))

        def training_step(self, batch, batch_idx):
            loss = nn.functional.mse_loss(self.net(batch[0]), batch[1])
            return loss * float("nan") if self.global_step == nan_at else loss

        def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
            if self.global_rank == 1 and self.global_step == PERTURB_AT and nan_at < 0:
                with torch.no_grad():
                    self.net[0].bias.add_(0.25)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.05, amsgrad=True)

        def train_dataloader(self):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(GLOBAL_BATCH * STEPS, 5, generator=g)
            data = TensorDataset(x, x.sum(1, keepdim=True))
            return DataLoader(data, batch_size=GLOBAL_BATCH // self.trainer.world_size)

    pl.seed_everything(0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=1,
        logger=[FileLogger()],
        callbacks=[
            OptimizerDiagnostics(
                log_every_n_steps=LOG_EVERY,
                histogram_every_n_steps=0,
                check_replicas=True,
                on_nonfinite="stop" if nan_at >= 0 else "log",
            )
        ],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    trainer.fit(Regression())


def launch(devices: int, out: Path, nan_at: int = -1) -> subprocess.CompletedProcess:
    out.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MASTER_PORT=str(port), WANDB_MODE="offline", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "tests.test_diagnostics_replicas", "--devices", str(devices)]
    cmd += ["--out", str(out), "--nan-at", str(nan_at)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def logged(path: Path, key: str) -> dict[int, float]:
    if not path.exists():
        return {}
    calls = [json.loads(line) for line in path.read_text().splitlines()]
    return {c["step"]: c["metrics"][key] for c in calls if key in c["metrics"]}


# ---------------------------------------------------------------- the checksum comparison
def adam_after_steps(seed: int, steps: int = 3) -> torch.optim.Adam:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, amsgrad=True)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return opt


def fake_all_reduce_max(*replicas: torch.Tensor):
    """The MAX all-reduce of two fake ranks: this rank's vector against the others'."""
    others = [torch.cat([c, -c]) for c in replicas]
    return lambda mine: torch.stack([mine, *others]).amax(0)


def test_checksums_cover_params_and_every_state_tensor():
    opt = adam_after_steps(seed=1)
    sums = state_checksums(opt)
    # per parameter: p, then state keys sorted: exp_avg, exp_avg_sq, max_exp_avg_sq, step
    assert sums.dtype == torch.float64 and sums.numel() == 2 * 5
    weight = opt.param_groups[0]["params"][0]
    assert sums[0].item() == pytest.approx(weight.double().sum().item(), rel=1e-12)
    assert sums[4].item() == 3.0  # the step count


def test_identical_replicas_spread_zero():
    a, b = state_checksums(adam_after_steps(seed=1)), state_checksums(adam_after_steps(seed=1))
    assert replica_spread(a, fake_all_reduce_max(b)).item() == 0.0
    assert replica_spread(a, lambda x: x).item() == 0.0  # one process: trivially agree


def test_differing_replicas_spread_is_the_largest_checksum_difference():
    a, b = state_checksums(adam_after_steps(seed=1)), state_checksums(adam_after_steps(seed=2))
    want = (a - b).abs().max().item()
    assert want > 0
    assert replica_spread(a, fake_all_reduce_max(b)).item() == pytest.approx(want, rel=1e-12)
    assert replica_spread(b, fake_all_reduce_max(a)).item() == pytest.approx(want, rel=1e-12)
    # one entry off by exactly 0.5 on one of three ranks
    c = a.clone()
    c[3] += 0.5
    assert replica_spread(a, fake_all_reduce_max(a, c)).item() == pytest.approx(0.5, abs=1e-9)


# ---------------------------------------------------------------- 2-process DDP
def test_ddp_replicas_agree_at_every_logging_step_until_one_is_nudged(tmp_path):
    proc = launch(2, tmp_path / "ddp")
    assert proc.returncode == 0, proc.stderr[-4000:]
    key = "diag/replica_max_abs_diff"
    diffs = logged(tmp_path / "ddp" / "rank0.jsonl", key)
    assert sorted(diffs) == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert all(diffs[s] == 0.0 for s in diffs if s <= PERTURB_AT)  # bit-identical replicas
    assert all(diffs[s] > 0.1 for s in diffs if s > PERTURB_AT)  # the collective really compares
    assert logged(tmp_path / "ddp" / "rank1.jsonl", key) == {}  # rank one only all-reduces


def test_ddp_stop_on_nan_saves_and_stops_both_ranks(tmp_path):
    proc = launch(2, tmp_path / "stop", nan_at=3)
    assert proc.returncode != 0
    assert "NonFiniteError: non-finite values (NaN/inf) before optimizer step 4:" in proc.stderr
    checkpoint = torch.load(
        tmp_path / "stop" / "checkpoints" / "last-good.ckpt", map_location="cpu", weights_only=False
    )
    assert checkpoint["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--nan-at", type=int, default=-1)
    args = parser.parse_args()
    run_fit(args.devices, args.out, args.nan_at)
