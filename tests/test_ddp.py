"""DDP end to end through train.py on CPU (gloo): one run folder and one W&B run, not one per rank."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakedata import write_fake_mnist
from tests.subprocess_env import offline_env

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_ddp_fit_logs_one_wandb_run(tmp_path):
    write_fake_mnist(tmp_path / "data", n_train=5600, n_test=100)
    env = offline_env()
    command = [
        sys.executable, str(REPO / "train.py"), "fit", "--config", "mnist_logreg_amsgrad.yaml",
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
        "--data.data_dir=data", "--data.num_workers=0", "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "mnist_logreg_amsgrad").iterdir()  # both ranks share it
    wandb_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1  # rank zero logs; the other rank makes no run
    assert list(run_dir.rglob("last.ckpt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "runs"]
