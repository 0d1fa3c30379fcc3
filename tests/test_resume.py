"""Exact resume: stop after N steps, resume from the last checkpoint, end bit for bit where an
uninterrupted run ends (parameters and the whole optimizer state, AdaShift's queue included)."""

import sys
from pathlib import Path

import pytest
import torch
import yaml

from lit_amsgrad.cli import load_config, main

ROUNDS, STOP_AT = 12_000, 5_000


def _config_with_periodic_checkpoint(tmp_path: Path, optimizer: str) -> Path:
    config = load_config(f"synthetic_online_{optimizer}.yaml")
    config["trainer"]["enable_checkpointing"] = True
    config["trainer"]["callbacks"].append(
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"every_n_train_steps": 1000, "save_top_k": 0, "save_last": True},
        }
    )
    path = tmp_path / f"resume_{optimizer}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fit(config: Path, *extra: str):
    return main(["fit", "--config", str(config), "--trainer.logger=false",
                 "--trainer.enable_progress_bar=false", f"--data.num_rounds={ROUNDS}",
                 *extra])  # fmt: skip


@pytest.mark.parametrize("optimizer", ["amsgrad", "adashift"])
def test_stopped_and_resumed_run_equals_uninterrupted_run(optimizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    config = _config_with_periodic_checkpoint(tmp_path, optimizer)
    whole = _fit(config)
    stopped = _fit(config, f"--trainer.max_steps={STOP_AT}")
    assert stopped.trainer.global_step == STOP_AT
    resumed = _fit(config, "--ckpt_path", "last")
    assert Path(resumed.trainer.ckpt_path).name == "last.ckpt"
    assert resumed.trainer.global_step == whole.trainer.global_step == ROUNDS

    assert torch.equal(resumed.model.x, whole.model.x)
    assert torch.equal(resumed.model.cumulative_loss, whole.model.cumulative_loss)
    ours = resumed.trainer.optimizers[0].state_dict()
    reference = whole.trainer.optimizers[0].state_dict()
    assert ours["param_groups"] == reference["param_groups"]
    for key, value in reference["state"][0].items():
        got = ours["state"][0][key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(got, value), key
        else:
            assert got == value, key
    if optimizer == "adashift":
        assert "grad_queue" in ours["state"][0]


@pytest.mark.parametrize("config", ["cifarnet_amsgrad.yaml", "mnist_logreg_amsgrad.yaml"])
def test_image_task_resumed_at_an_epoch_end_equals_uninterrupted_run(config, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    """Image tasks: exact from an epoch-end checkpoint (shuffle by (seed, epoch), RNG kept
    for dropout). Mid-epoch, their loaders are not resumable and Lightning says so."""
    from tests.fakedata import skip_cifar10_md5, write_fake_cifar10, write_fake_mnist

    write_fake_mnist(tmp_path / "data", n_train=5400, n_test=50)
    write_fake_cifar10(tmp_path / "data", n_per_batch=1080, n_test=50)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    skip_cifar10_md5(monkeypatch)
    common = ["--config", config, "--data.data_dir=data", "--data.num_workers=0",
              "--trainer.logger=false", "--trainer.enable_progress_bar=false",
              "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"]  # fmt: skip
    whole = main(["fit", *common, "--trainer.max_epochs=3"])
    first = main(["fit", *common, "--trainer.max_epochs=1"])
    first_last = Path(first.trainer.checkpoint_callback.last_model_path)
    assert torch.load(first_last, weights_only=False)["global_step"] == 3
    resumed = main(["fit", *common, "--trainer.max_epochs=3", "--ckpt_path", "last"])
    assert Path(resumed.trainer.ckpt_path).resolve() == first_last.resolve()
    assert resumed.trainer.global_step == whole.trainer.global_step == 9
    for (name, p), q in zip(whole.model.named_parameters(), resumed.model.parameters(),
                            strict=True):  # fmt: skip
        assert torch.equal(p, q), name
    ours = resumed.trainer.optimizers[0].state_dict()["state"]
    reference = whole.trainer.optimizers[0].state_dict()["state"]
    for index, state in reference.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(ours[index][key], value), (index, key)


@pytest.mark.parametrize("config", ["cifarnet_amsgrad.yaml", "mnist_logreg_amsgrad.yaml"])
def test_image_task_resumed_mid_epoch_equals_uninterrupted_run(config, tmp_path, monkeypatch):
    """Stopped after 5 of 8 batches of an epoch, resumed from the periodic checkpoint."""
    from tests.fakedata import skip_cifar10_md5, write_fake_cifar10, write_fake_mnist

    write_fake_mnist(tmp_path / "data", n_train=6024, n_test=50)  # 1024 train = 8 batches
    write_fake_cifar10(tmp_path / "data", n_per_batch=1205, n_test=50)  # 1025 train
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    skip_cifar10_md5(monkeypatch)
    cfg = load_config(config)
    for callback in cfg["trainer"]["callbacks"]:
        if callback["init_args"].get("every_n_train_steps"):
            callback["init_args"]["every_n_train_steps"] = 5
    path = tmp_path / f"mid_{config}"
    path.write_text(yaml.safe_dump(cfg))
    common = ["--config", str(path), "--data.data_dir=data", "--data.num_workers=0",
              "--trainer.logger=false", "--trainer.enable_progress_bar=false",
              "--trainer.limit_val_batches=1", "--trainer.max_epochs=2"]  # fmt: skip
    whole = main(["fit", *common])
    # a killed run: what is left of it is the periodic checkpoint of step 5 (a max_steps stop
    # would also write an epoch-end last.ckpt, which is not the case to test)
    stopped = main(["fit", *common, "--trainer.max_steps=5"])
    (periodic,) = Path(stopped.trainer.default_root_dir).rglob("last-periodic.ckpt")
    saved = torch.load(periodic, weights_only=False)
    assert saved["global_step"] == 5  # mid-epoch
    resumed = main(["fit", *common, "--ckpt_path", str(periodic)])
    assert resumed.trainer.global_step == whole.trainer.global_step
    for (name, p), q in zip(whole.model.named_parameters(), resumed.model.parameters(),
                            strict=True):  # fmt: skip
        assert torch.equal(p, q), name
