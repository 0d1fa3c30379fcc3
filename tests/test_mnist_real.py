"""Real MNIST digits through train.py: paper-mode AMSGrad logistic regression learns in one epoch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lit_amsgrad.cli import main
from lit_amsgrad.real_data import SHARED_DATA, real_mnist


@pytest.fixture
def real_mnist_root(tmp_path) -> Path:
    """The 10,000 official test digits in torchvision's layout, as both its train and test files.

    Only the training files are used: the datamodule's seeded split makes 8,000 of them the
    training set and 2,000 others the held-out validation set.
    """
    root = real_mnist(tmp_path / "data")
    if root is None:
        pytest.skip(
            f"real MNIST digits not found in {SHARED_DATA / 'mnist'} (only the project's machines have them)"
        )
    return root


def _finish_wandb_run() -> None:
    """Close the offline W&B run of the default logger so later tests do not log into it."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def test_logistic_regression_with_amsgrad_learns_real_digits_in_one_epoch(
    real_mnist_root, tmp_path, monkeypatch, request
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    request.addfinalizer(_finish_wandb_run)
    cli = main(
        [
            "fit",
            "--config", "mnist_logreg_amsgrad.yaml",
            f"--data.data_dir={real_mnist_root}",
            "--data.train_size=8000",
            "--data.val_size=2000",
            "--trainer.max_epochs=1",
        ]
    )  # fmt: skip
    dm = cli.datamodule
    assert (len(dm.train_set), len(dm.val_set)) == (8000, 2000)
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    assert cli.trainer.global_step == 63  # ceil(8000 / 128) steps of the paper's batch
    assert type(cli.trainer.optimizers[0]).__name__ == "AMSGrad"
    held_out_acc = float(cli.trainer.callback_metrics["val/acc"])
    print(f"held-out accuracy after one epoch: {held_out_acc:.4f}")
    assert held_out_acc >= 0.85, f"held-out accuracy {held_out_acc:.3f} after one epoch"
