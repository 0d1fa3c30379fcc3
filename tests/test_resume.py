"""Exact resume: stop after N steps, resume from the last checkpoint, end bit for bit where an
uninterrupted run ends (parameters and the whole optimizer state, AdaShift's queue included)."""

import os
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

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


# --- every checkpoint position the template writes, against one straight run --------------
# 712 fake digits, 200 held out: 4 training batches of 128 and 2 validation batches an epoch,
# 3 epochs. Each case stops a run the way a real one stops (a periodic checkpoint then a
# kill, a SIGTERM at a chosen hook) and resumes from what it left.

_EPOCHS, _BATCHES = 3, 4


class RecordAndSignal(Callback):
    """Appends every finished validation (global step, val/loss) to ``path``; sends this process
    a real SIGTERM at ``signal_at`` ("train" or "val") of ``step`` (and validation ``batch``)."""

    def __init__(self, path: str, signal_at: str = "", step: int = -1, batch: int = -1) -> None:
        self.path, self.signal_at, self.step, self.batch = Path(path), signal_at, step, batch

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            with self.path.open("a") as f:
                f.write(f"{trainer.global_step} {trainer.callback_metrics['val/loss'].item()!r}\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.signal_at == "train" and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking or self.signal_at != "val":
            return
        if trainer.global_step == self.step and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


def _validations(path: Path) -> list[tuple[int, float]]:
    if not path.is_file():
        return []
    return [(int(s), float(v)) for s, v in (line.split() for line in path.read_text().splitlines())]


def _position_fit(root: Path, name: str, every: int, *extra: str, signal_at=("", -1, -1),
                  num_workers: int = 0, ckpt: Path | None = None):  # fmt: skip
    """One fit of the logreg task in ``root/name``; returns (cli or None if SIGTERMed, record).
    With ``num_workers`` it runs the per-sample path (the resident path has no workers)."""
    cfg = load_config("mnist_logreg_amsgrad.yaml")
    for callback in cfg["trainer"]["callbacks"]:
        if callback["init_args"].get("every_n_train_steps"):
            callback["init_args"]["every_n_train_steps"] = every
    record = root / f"{name}.validations"
    at, step, batch = signal_at
    cfg["trainer"]["callbacks"].append({
        "class_path": f"{__name__}.RecordAndSignal",
        "init_args": {"path": str(record), "signal_at": at, "step": step, "batch": batch},
    })  # fmt: skip
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    args = ["fit", "--config", str(path), "--data.data_dir=data", "--data.val_size=200",
            f"--data.num_workers={num_workers}", f"--data.per_sample={num_workers > 0}",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.max_epochs={_EPOCHS}", f"--trainer.default_root_dir={root / name}",
            *extra, *(["--ckpt_path", str(ckpt)] if ckpt else [])]  # fmt: skip
    try:
        return main(args), record
    except SIGTERMException:
        return None, record


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    from tests.fakedata import write_fake_mnist

    root = tmp_path_factory.mktemp("positions")
    write_fake_mnist(root / "data", n_train=712, n_test=20)
    here = os.getcwd()
    os.chdir(root)
    try:
        cli, record = _position_fit(root, "straight", 1000)
    finally:
        os.chdir(here)
    assert cli.trainer.global_step == _EPOCHS * _BATCHES
    return root, cli, _validations(record)


# name: (periodic every, stop arguments, signal, checkpoint file, its step,
#        whether the validation at that step had finished when it was written)
POSITIONS = {
    "mid-epoch periodic": (6, ["--trainer.max_steps=6"], ("", -1, -1), "last-periodic", 6, True),
    "periodic at an epoch's last batch": (
        4,
        ["--trainer.max_steps=5"],
        ("", -1, -1),
        "last-periodic",
        4,
        False,
    ),  # fmt: skip
    "epoch end (last.ckpt after validation)": (
        1000,
        ["--trainer.max_epochs=1"],
        ("", -1, -1),
        "last",
        4,
        True,
    ),  # fmt: skip
    "SIGTERM mid-epoch": (1000, [], ("train", 6, -1), "last", 7, True),
    "SIGTERM during validation": (1000, [], ("val", 4, 0), "last", 4, False),
    "SIGTERM in the last validation batch": (1000, [], ("val", 4, 1), "last", 4, True),
}


@pytest.mark.parametrize(
    ("position", "num_workers"),
    [(p, 0) for p in POSITIONS]
    + [("periodic at an epoch's last batch", 2), ("SIGTERM during validation", 2)],
)
def test_resume_from_every_checkpoint_position_equals_straight_run(
    position, num_workers, straight_run, monkeypatch
):
    """Weights, optimizer state and the logged validations (steps and values) bit for bit."""
    root, whole, straight_validations = straight_run
    every, stop, signal_at, filename, step, validated = POSITIONS[position]
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    name = f"{position}-{num_workers}".replace(" ", "_").replace("'", "")
    stopped, _ = _position_fit(root, f"{name}-stop", every, *stop, signal_at=signal_at,
                               num_workers=num_workers)  # fmt: skip
    assert (stopped is None) == bool(signal_at[0])  # the signal cases end in SIGTERM
    (checkpoint,) = (root / f"{name}-stop").rglob(f"{filename}.ckpt")
    assert torch.load(checkpoint, weights_only=False)["global_step"] == step
    resumed, record = _position_fit(root, f"{name}-resume", every,
                                    "--trainer.num_sanity_val_steps=0",
                                    num_workers=num_workers, ckpt=checkpoint)  # fmt: skip
    assert resumed.trainer.global_step == whole.trainer.global_step
    for (key, p), q in zip(whole.model.named_parameters(), resumed.model.parameters(),
                           strict=True):  # fmt: skip
        assert torch.equal(p, q), key
    ours = resumed.trainer.optimizers[0].state_dict()["state"]
    for index, state in whole.trainer.optimizers[0].state_dict()["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(ours[index][key]), torch.as_tensor(value)), key
    expected = [
        (s, v) for s, v in straight_validations if s > step or (s == step and not validated)
    ]
    assert _validations(record) == expected


@pytest.mark.slow
def test_ddp_resume_mid_epoch_on_the_resident_path_equals_straight_run(tmp_path):
    """Two CPU processes (gloo): the resident loader shards itself, so a periodic checkpoint in
    the middle of an epoch resumes bit for bit under DDP too (weights and optimizer state)."""
    import subprocess

    from tests.fakedata import write_fake_mnist
    from tests.subprocess_env import offline_env

    write_fake_mnist(tmp_path / "data", n_train=740, n_test=20)  # 640 train: 5 batches
    cfg = load_config("mnist_logreg_amsgrad.yaml")
    for callback in cfg["trainer"]["callbacks"]:
        if callback["init_args"].get("every_n_train_steps"):
            callback["init_args"]["every_n_train_steps"] = 3
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(cfg))
    repo = Path(__file__).resolve().parents[1]

    def fit(name: str, *extra: str) -> None:
        command = [sys.executable, str(repo / "train.py"), "fit", "--config", str(config),
                   "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
                   "--data.data_dir=data", "--data.num_workers=0", "--data.val_size=100",
                   "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false",
                   "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path / name}",
                   *extra]  # fmt: skip
        done = subprocess.run(command, cwd=tmp_path, env=offline_env(), capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]

    fit("straight")
    fit("stopped", "--trainer.max_steps=3")
    (periodic,) = (tmp_path / "stopped").rglob("last-periodic.ckpt")
    assert torch.load(periodic, weights_only=False)["global_step"] == 3  # mid-epoch
    fit("resumed", "--ckpt_path", str(periodic))
    (whole,) = (tmp_path / "straight").rglob("last.ckpt")
    resumed = sorted((tmp_path / "resumed").rglob("last.ckpt"))[0]
    a, b = (torch.load(p, weights_only=False) for p in (whole, resumed))
    assert a["global_step"] == b["global_step"] == 10
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for index, state in a["optimizer_states"][0]["state"].items():
        for key, value in state.items():
            assert torch.equal(
                torch.as_tensor(value),
                torch.as_tensor(b["optimizer_states"][0]["state"][index][key]),
            ), key


def test_resume_of_a_run_that_resumed_during_validation_equals_straight_run(
    straight_run, monkeypatch
):
    """A resumed validation leaves Lightning's counters looking mid-evaluation in the
    checkpoint written right after it; resuming from that one must not rerun or skip it."""
    root, whole, straight_validations = straight_run
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    stopped, _ = _position_fit(root, "twice-stop", 1000, signal_at=("val", 4, 0))
    assert stopped is None
    (first,) = (root / "twice-stop").rglob("last.ckpt")
    again, record = _position_fit(root, "twice-again", 1000, "--trainer.max_epochs=1",
                                  "--trainer.num_sanity_val_steps=0", ckpt=first)  # fmt: skip
    assert _validations(record) == straight_validations[:1]  # validation of epoch 0, rerun
    (second,) = (root / "twice-again").rglob("last.ckpt")
    resumed, record = _position_fit(root, "twice-resume", 1000,
                                    "--trainer.num_sanity_val_steps=0", ckpt=second)  # fmt: skip
    assert _validations(record) == straight_validations[1:]
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
