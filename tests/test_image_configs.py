"""Every image config through train.py's CLI on fake data in the real formats."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lit_amsgrad.cli import CONFIG_DIR, REPO_ROOT, load_config, main
from tests.fakedata import skip_cifar10_md5, write_fake_cifar10, write_fake_mnist

IMAGE_TASKS = ("cifarnet", "mnist_logreg", "mnist_mlp")
IMAGE_CONFIGS = [f"{task}_{opt}.yaml" for task in IMAGE_TASKS for opt in ("adam", "amsgrad")]


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    """Both fake sets, with just over the configs' 5,000 validation images in the training split."""
    root = tmp_path_factory.mktemp("data")
    write_fake_mnist(root, n_train=5100, n_test=100)
    write_fake_cifar10(root, n_per_batch=1020, n_test=100)
    return root


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Iterator[Path]:
    """An empty working directory for the run folders, W&B offline, CIFAR-10 md5s relaxed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])  # pytest's own arguments are not the CLI's
    monkeypatch.setenv("WANDB_MODE", "offline")
    skip_cifar10_md5(monkeypatch)
    yield tmp_path
    import wandb

    if wandb.run is not None:  # a fit with the default logger leaves its offline run open
        wandb.finish()


def test_every_task_and_optimizer_has_a_fragment():
    assert sorted(p.stem for p in (CONFIG_DIR / "tasks").glob("*.yaml")) >= list(IMAGE_TASKS)
    assert {"adam", "amsgrad"} <= {p.stem for p in (CONFIG_DIR / "optimizers").glob("*.yaml")}


@pytest.mark.parametrize("config", IMAGE_CONFIGS)
def test_config_states_its_bias_correction_and_the_papers_batch(config):
    task = config.rsplit("_", 1)[0]
    header = (CONFIG_DIR / "tasks" / f"{task}.yaml").read_text().split("seed_everything")[0]
    cfg = load_config(config)
    optimizer = cfg["model"]["init_args"]["optimizer"]
    mode = optimizer["init_args"]["bias_correction"]
    assert f"bias_correction {mode}" in header  # said in the task fragment's header
    assert optimizer["init_args"]["betas"] == [0.9, 0.999]
    assert cfg["data"]["init_args"]["batch_size"] == 128
    schedule = optimizer["init_args"].get("lr_schedule", "constant")
    assert schedule == ("inv_sqrt" if "logreg" in config else "constant")


@pytest.mark.parametrize("config", IMAGE_CONFIGS)
def test_fast_dev_run_of_every_image_config(config, fake_root, run_dir):
    cli = main(
        ["fit", "--config", config, f"--data.data_dir={fake_root}", "--trainer.fast_dev_run=true"]
    )
    cfg = load_config(config)
    optimizer_cfg = cfg["model"]["init_args"]["optimizer"]
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 1
    assert cli.model.hparams["net"] == cfg["model"]["init_args"]["net"]
    (optimizer,) = cli.trainer.optimizers
    assert f"{type(optimizer).__module__}.{type(optimizer).__name__}".startswith(
        "lit_amsgrad.optim"
    )
    assert type(optimizer).__name__ == optimizer_cfg["class_path"].rsplit(".", 1)[1]
    assert optimizer.defaults["lr"] == optimizer_cfg["init_args"]["lr"]
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(cli.trainer.callback_metrics)


def test_test_with_best_checkpoint_after_fit(fake_root, run_dir):
    """The README's two commands: fit, then test the best checkpoint in a new CLI run."""
    common = ["--config", "mnist_logreg_amsgrad.yaml", f"--data.data_dir={fake_root}"]
    short = ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2"]
    fit = main(["fit", *common, *short, "--trainer.max_epochs=2", "--data.num_workers=0"])
    best = fit.trainer.checkpoint_callback.best_model_path
    assert best and Path(best).is_file()
    assert Path(best).resolve().is_relative_to(run_dir.resolve())
    tested = main(["test", *common, "--ckpt_path", "best", "--data.num_workers=0"])
    assert tested.trainer.ckpt_path == best
    assert {"test/loss", "test/acc"} <= set(tested.trainer.callback_metrics)


@pytest.mark.slow
def test_ddp_two_processes_split_the_global_batch(tmp_path):
    """Under 2-process CPU DDP each process loads 64 of the 128: one epoch of 600 images is
    ceil(300 / 64) = 5 steps (it would be 3 if each process loaded the whole 128)."""
    import os
    import subprocess

    import torch

    write_fake_mnist(tmp_path / "data", n_train=5600, n_test=100)
    command = [
        sys.executable, str(REPO_ROOT / "train.py"), "fit",
        "--config", "mnist_logreg_amsgrad.yaml", "--data.data_dir=data", "--data.num_workers=0",
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
        "--trainer.max_epochs=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (last,) = tmp_path.glob("runs/mnist_logreg_amsgrad/*/checkpoints/last.ckpt")
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 5


def test_fit_with_ckpt_path_last_resumes_the_previous_run(fake_root, run_dir):
    """A second `fit --ckpt_path last` continues in the same run folder and W&B run."""
    common = ["--config", "mnist_logreg_amsgrad.yaml", f"--data.data_dir={fake_root}",
              "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1",
              "--data.num_workers=0"]  # fmt: skip
    first = main(["fit", *common, "--trainer.max_epochs=1"])
    first_dir = Path(first.trainer.default_root_dir)
    first_id = first.trainer.logger.version
    resumed = main(["fit", *common, "--trainer.max_epochs=2", "--ckpt_path", "last"])
    assert Path(resumed.trainer.default_root_dir) == first_dir
    assert resumed.trainer.logger.version == first_id
    assert Path(resumed.trainer.ckpt_path).name == "last.ckpt"
    assert resumed.trainer.global_step == 2 * first.trainer.global_step


def test_ckpt_path_best_without_an_earlier_run_says_so(fake_root, run_dir):
    from lit_amsgrad.cli import CheckpointNotFoundError

    with pytest.raises(CheckpointNotFoundError, match="no earlier run of 'mnist_mlp_adam'"):
        main(["test", "--config", "mnist_mlp_adam.yaml", f"--data.data_dir={fake_root}",
              "--ckpt_path", "best"])  # fmt: skip


@pytest.mark.parametrize("config", IMAGE_CONFIGS)
def test_every_image_config_has_the_fused_switch(config):
    """One line turns the compiled step on: ``fused`` is spelled out in every image config."""
    cfg = load_config(config)
    assert cfg["model"]["init_args"]["optimizer"]["init_args"]["fused"] is False


def test_fused_switch_trains_like_the_eager_step(fake_root, run_dir):
    """The same 6 steps of logistic regression with the eager and the fused step end at the
    same weights (to float32 round-off), through train.py's CLI."""
    weights = []
    for fused in ("false", "true"):
        cli = main(
            ["fit", "--config", "mnist_logreg_amsgrad.yaml", f"--data.data_dir={fake_root}",
             "--trainer.max_steps=6", "--trainer.limit_val_batches=0", "--trainer.logger=false",
             "--data.num_workers=0", f"--model.optimizer.init_args.fused={fused}"]
        )  # fmt: skip
        (optimizer,) = cli.trainer.optimizers
        assert optimizer.param_groups[0]["fused"] is (fused == "true")
        assert cli.trainer.global_step == 6
        assert all(state["step"] == 6 for state in optimizer.state.values())
        weights.append({k: v.clone() for k, v in cli.model.state_dict().items()})
    assert weights[0].keys() == weights[1].keys()
    for key, eager in weights[0].items():
        torch.testing.assert_close(weights[1][key], eager, msg=key)
