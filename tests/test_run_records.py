"""A run does what it records: a fresh fit restores nothing, a resume with other settings is
refused with the differences listed, checkpoints go through the atomic writer, ``--ckpt_path
last`` skips a corrupt newest file, W&B records a failed run as failed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from lit_amsgrad.checkpoint_io import AtomicCheckpointIO
from lit_amsgrad.cli import main
from lit_amsgrad.errors import ConfigError
from lit_amsgrad.resume import ChangedSettingsError
from tests.fakedata import write_fake_mnist

LOGREG = ["--config", "mnist_logreg_amsgrad.yaml", "--data.data_dir=data", "--data.val_size=200",
          "--data.num_workers=0", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
          "--trainer.enable_model_summary=false"]  # fmt: skip


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    write_fake_mnist(tmp_path / "data", n_train=1200, n_test=50)
    return tmp_path


def _fit(*args: str):
    return main(["fit", *LOGREG, "--trainer.max_steps=4", "--trainer.max_epochs=-1", *args])


def test_checkpoints_are_written_by_the_atomic_writer(workdir):
    cli = _fit()
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert list(workdir.glob("runs/mnist_logreg_amsgrad/*/checkpoints/last.ckpt"))


def test_a_fresh_fit_into_a_used_folder_is_refused_not_restored(workdir):
    """Before: Lightning printed 'Restoring states from .../last.ckpt' and trained on from the
    old run (InterruptionCheckpoint was an OnExceptionCheckpoint, which turns ckpt_path=None
    into 'last'), with the new config.yaml recording other settings."""
    root = workdir / "shared_root"
    _fit(f"--trainer.default_root_dir={root}")
    with pytest.raises(
        ConfigError, match="holds the checkpoints of an earlier run.*--ckpt_path last"
    ):
        _fit(f"--trainer.default_root_dir={root}", "--model.init_args.optimizer.init_args.lr=0.5")
    # a fresh folder trains from step 0: nothing restored
    cli = _fit(f"--trainer.default_root_dir={workdir / 'other_root'}")
    assert cli.trainer.global_step == 4


@pytest.mark.parametrize(
    ("change", "listed"),
    [
        (["--model.init_args.optimizer.init_args.lr=0.5"], "optimizer.init_args.lr: 0.01 in the checkpoint, 0.5 now"),
        (["--model.init_args.optimizer.class_path=lit_amsgrad.optim.Adam"], "optimizer.class_path: 'lit_amsgrad.optim.AMSGrad' in the checkpoint, 'lit_amsgrad.optim.Adam' now"),
        (["--data.batch_size=64"], "data.init_args.batch_size: 128 in the checkpoint, 64 now"),
    ],
    ids=["lr", "optimizer", "batch_size"],
)  # fmt: skip
def test_a_resume_with_other_settings_is_refused_with_the_differences(workdir, change, listed):
    """Before: exit 0, training the checkpoint's settings while config.yaml said the new."""
    _fit()
    with pytest.raises(ChangedSettingsError, match=listed.replace("(", r"\(").replace(")", r"\)")):
        _fit("--ckpt_path", "last", "--trainer.max_steps=8", *change)


def test_a_checkpoint_of_another_config_is_refused(workdir):
    _fit()
    (checkpoint,) = workdir.glob("runs/mnist_logreg_amsgrad/*/checkpoints/last.ckpt")
    with pytest.raises(
        ChangedSettingsError, match="model.init_args.net: 'logreg' in the checkpoint, 'mlp' now"
    ):
        main(["fit", *[a if a != "mnist_logreg_amsgrad.yaml" else "mnist_mlp_amsgrad.yaml" for a in LOGREG],
              "--ckpt_path", str(checkpoint), "--trainer.max_steps=8"])  # fmt: skip


def test_a_resume_may_change_how_it_computes(workdir):
    """fused, the trainer's limits and devices say how and how long, not what: allowed."""
    _fit()
    cli = _fit("--ckpt_path", "last", "--trainer.max_steps=6",
               "--model.init_args.optimizer.init_args.fused=true")  # fmt: skip
    assert cli.trainer.global_step == 6


def test_ckpt_path_last_skips_a_corrupt_newest_checkpoint(workdir, capsys):
    _fit("--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
         "--trainer.callbacks.every_n_train_steps=2", "--trainer.callbacks.filename=last-periodic",
         "--trainer.max_steps=4")  # fmt: skip
    lasts = sorted(workdir.glob("runs/mnist_logreg_amsgrad/*/checkpoints/last*.ckpt"))
    assert len(lasts) == 2
    newest = max(lasts, key=lambda p: p.stat().st_mtime)
    older = min(lasts, key=lambda p: p.stat().st_mtime)
    step = torch.load(older, weights_only=False)["global_step"]
    newest.write_bytes(newest.read_bytes()[:5000])  # a stub, as a copy killed half way
    cli = _fit("--ckpt_path", "last", f"--trainer.max_steps={step + 2}")
    err = capsys.readouterr().err
    assert f"note: resuming from {older.relative_to(workdir)}, the newest intact checkpoint" in err
    assert cli.trainer.global_step == step + 2


def test_wandb_records_a_failed_run_as_failed(workdir, monkeypatch):
    """Before: the NaN stop, SIGTERM and crashes all ended the W&B run with exit code 0."""
    import wandb

    codes = []
    finish = wandb.finish
    monkeypatch.setattr(
        wandb,
        "finish",
        lambda exit_code=None, **kw: (codes.append(exit_code), finish(exit_code=exit_code, **kw)),
    )
    args = [a for a in LOGREG if a != "--trainer.logger=false"]
    with pytest.raises(Exception, match="non-finite"):
        # the shipped configs stop on NaN/inf (on_nonfinite: stop)
        main(
            ["fit", *args, "--trainer.max_steps=4", "--model.init_args.optimizer.init_args.lr=1e38"]
        )
    main(["fit", *args, "--trainer.max_steps=2"])
    assert codes == [1, 0]


def _diag_steps(run_root: Path) -> list[int]:
    import csv

    (metrics,) = run_root.rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    return sorted({int(r["step"]) for r in rows if r.get("diag/eff_lr/max")})


def test_diag_every_sets_the_cadence_and_a_short_run_logs_its_last_step(workdir):
    """--diag_every is the one flag for the diagnostics' cadence (the README's
    --trainer.callbacks.log_every_n_steps landed on the config's last callback, a
    ModelCheckpoint, and failed); a run that ends between logging steps logs its end."""
    root = workdir / "cadence"
    args = [a for a in LOGREG if a != "--trainer.logger=false"]
    cli = main(["fit", *args, "--diag_every=5", "--trainer.max_steps=12", "--trainer.max_epochs=-1",
                f"--trainer.default_root_dir={root}",
                "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                f"--trainer.logger.save_dir={root}"])  # fmt: skip
    (diagnostics,) = [
        c for c in cli.trainer.callbacks if type(c).__name__ == "OptimizerDiagnostics"
    ]
    assert diagnostics.log_every_n_steps == 5
    assert _diag_steps(root) == [5, 10, 12]
    (saved,) = root.rglob("config.yaml")
    assert "diag_every: 5" in saved.read_text()


def test_diag_every_without_diagnostics_is_refused(workdir):
    with pytest.raises(
        ConfigError, match="--diag_every: this config has no callbacks.OptimizerDiagnostics"
    ):
        main(["fit", *LOGREG, "--diag_every=5", "--trainer.callbacks=[]", "--trainer.max_steps=1"])


STARTER = """
import sys, time
from lit_amsgrad.cli import new_run_dir
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
print(new_run_dir("race"))
"""


def test_simultaneous_starts_get_distinct_folders(tmp_path):
    """Before: exists() then mkdir raced, FileExistsError in 2 of 20 simultaneous starts."""
    import subprocess
    import time

    start = time.time() + 4  # after every interpreter has imported
    procs = [
        subprocess.Popen([sys.executable, "-c", STARTER, str(start)], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]  # fmt: skip
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-500:] for _, err in results]
    folders = [out.strip() for out, _ in results]
    assert len(set(folders)) == 8


def test_a_second_process_writing_into_a_running_run_is_refused(workdir):
    import subprocess

    _fit()
    (run,) = (workdir / "runs" / "mnist_logreg_amsgrad").iterdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from lit_amsgrad.cli import lock_run_dir\nfrom pathlib import Path\n"
         f"lock_run_dir(Path({str(run)!r})); print('locked', flush=True)\nimport time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            ConfigError,
            match=rf"run folder {run.relative_to(workdir)} is in use by process {holder.pid}",
        ):
            _fit("--ckpt_path", "last", "--trainer.max_steps=6")
    finally:
        holder.kill()
        holder.wait()
    assert _fit("--ckpt_path", "last", "--trainer.max_steps=6").trainer.global_step == 6


def test_a_synthetic_resume_with_another_lr_is_refused_through_the_optimizer_state(workdir):
    """The synthetic task does not save its optimizer in its hyperparameters: the saved
    param groups say what trained."""
    args = ["--config", "synthetic_online_amsgrad.yaml", "--data.num_rounds=3000",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            "--trainer.enable_checkpointing=true", "--trainer.max_steps=1000"]  # fmt: skip
    main(["fit", *args, "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
          "--trainer.callbacks.save_last=true"])  # fmt: skip
    with pytest.raises(
        ChangedSettingsError, match=r"optimizer.init_args.lr: 0.5 in the checkpoint, 0.25 now"
    ):
        main(["fit", *args, "--ckpt_path", "last", "--model.init_args.optimizer.init_args.lr=0.25"])


WITH_WANDB = [a for a in LOGREG if a != "--trainer.logger=false"]


def test_every_checkpoint_lands_in_the_run_folder(workdir):
    """Before: with the W&B logger, ModelCheckpoint wrote into
    runs/<config>/<time>/lit_amsgrad/<W&B id>/checkpoints/, not the README's
    runs/<config>/<time>/checkpoints/ (only the interruption checkpoint went there)."""
    cli = main(["fit", *WITH_WANDB, "--trainer.max_steps=4", "--trainer.max_epochs=-1"])
    run = Path(cli.trainer.default_root_dir)
    checkpoints = sorted(p.relative_to(run) for p in run.rglob("*.ckpt"))
    assert checkpoints, "the fit saved no checkpoint"
    assert all(p.parent == Path("checkpoints") for p in checkpoints), checkpoints


@pytest.mark.parametrize("subcommand", ["test", "validate"])
def test_scoring_without_a_checkpoint_is_refused(workdir, subcommand):
    """Before: `test` without --ckpt_path scored the untrained weights (test/acc 0.109)."""
    with pytest.raises(
        ConfigError, match=f"{subcommand} without --ckpt_path would score untrained"
    ):
        main([subcommand, *LOGREG])
    scored = main([subcommand, *LOGREG, "--untrained=true"])  # on purpose: allowed
    assert scored.trainer.global_step == 0
    with pytest.raises(ConfigError, match="--untrained is for test/validate/predict without"):
        main(["fit", *LOGREG, "--untrained=true"])


def test_testing_a_checkpoint_logs_into_the_run_that_trained_it(workdir):
    """Before: `test --ckpt_path best` opened a new W&B run, so test/acc was not beside the
    run's training curves."""
    from lit_amsgrad.cli import wandb_run_id

    fit = main(["fit", *WITH_WANDB, "--trainer.max_epochs=1"])  # validates: a best exists
    fit_run = Path(fit.trainer.default_root_dir)
    tested = main(["test", *WITH_WANDB, "--ckpt_path", "best"])
    assert Path(tested.trainer.default_root_dir) != fit_run  # its own folder and config.yaml
    assert tested.trainer.logger.version == wandb_run_id(fit_run) == fit.trainer.logger.version
    (explicit,) = fit_run.glob("checkpoints/last.ckpt")
    again = main(["test", *WITH_WANDB, "--ckpt_path", str(explicit)])
    assert again.trainer.logger.version == fit.trainer.logger.version


def test_wandb_config_holds_the_trainer_the_seed_and_what_lightning_resolved(workdir):
    """Before: the W&B config held the model's hyperparameters only: no trainer settings, no
    seed, nothing of what Lightning resolved (accelerator, world size, precision)."""
    from tests.wandb_records import read_config

    cli = main(["fit", "--config", "synthetic_online_amsgrad.yaml", "--data.num_rounds=3000",
                "--trainer.max_steps=700", "--seed_everything=7",
                "--trainer.enable_progress_bar=false"])  # fmt: skip
    (run_file,) = Path(cli.trainer.default_root_dir).glob("wandb/offline-run-*/run-*.wandb")
    config = read_config(run_file)
    assert config["trainer"]["max_steps"] == 700
    assert config["seed_everything"] == 7
    assert config["resolved"] == {
        "accelerator": "cpu",
        "strategy": "SingleDeviceStrategy",
        "precision": "32-true",
        "world_size": 1,
        "num_nodes": 1,
    }


def test_a_precision_lightning_would_replace_is_refused(workdir):
    """Before: `16-mixed` on a CPU ran bf16-mixed while config.yaml said 16-mixed."""
    with pytest.raises(
        ConfigError,
        match=r"trainer.precision=16-mixed is not available on cpu \(Lightning would run "
        r"bf16-mixed\): set --trainer.precision=bf16-mixed or 32-true",
    ):
        _fit("--trainer.accelerator=cpu", "--trainer.precision=16-mixed")
    assert _fit(
        "--trainer.accelerator=cpu", "--trainer.precision=bf16-mixed"
    ).trainer.precision == ("bf16-mixed")


def _refuse_writes_under(monkeypatch, folder: Path) -> None:
    """Creating folders and opening files for writing under ``folder`` fail as on a
    read-only filesystem (tests run as root here, where chmod does not stop a write)."""
    import builtins
    import errno
    import os

    def refused(path) -> bool:
        return Path(path).resolve().is_relative_to(folder.resolve())

    def error(path) -> PermissionError:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    real_mkdir, real_open = os.mkdir, builtins.open

    def mkdir(path, *args, **kwargs):
        if refused(path):
            raise error(path)
        return real_mkdir(path, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") and refused(file):
            raise error(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)


def test_an_unwritable_runs_folder_is_one_line(workdir, monkeypatch):
    """Before: a PermissionError traceback from the run-folder naming."""
    (workdir / "runs").mkdir()
    _refuse_writes_under(monkeypatch, workdir / "runs")
    with pytest.raises(
        ConfigError,
        match=r"cannot create the run folder runs/mnist_logreg_amsgrad/\S+ \(Permission denied\): "
        "run from a writable folder or pass --trainer.default_root_dir",
    ):
        _fit()


def test_resuming_into_a_read_only_run_folder_is_one_line(workdir, monkeypatch):
    """Before: a PermissionError traceback when the resume began writing."""
    cli = _fit()
    run = Path(cli.trainer.default_root_dir)
    _refuse_writes_under(monkeypatch, run)
    with pytest.raises(
        ConfigError, match=rf"run folder {run} is not writable \(Permission denied\)"
    ):
        _fit("--ckpt_path", "last", "--trainer.max_steps=6")


def test_a_python_fit_with_a_partial_optimizer_resumes_with_lightnings_defaults(workdir):
    """Before: the `partial` went into the checkpoint's hyperparameters, and
    `Trainer.fit(ckpt_path=...)` (torch.load with weights_only=True since torch 2.6) refused
    to load it."""
    import functools

    import lightning as L

    from datamodules import MNISTDataModule
    from lit_amsgrad.models import ImageClassifier
    from lit_amsgrad.optim import AMSGrad

    def fit(max_steps: int, ckpt_path: str | None = None) -> L.Trainer:
        model = ImageClassifier(optimizer=functools.partial(AMSGrad, lr=1e-2, betas=(0.9, 0.99)))
        data = MNISTDataModule(data_dir="data", val_size=200, num_workers=0)
        trainer = L.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir="python_run")  # fmt: skip
        trainer.fit(model, data, ckpt_path=ckpt_path)
        return trainer

    first = fit(3)
    (checkpoint,) = Path("python_run").rglob("*.ckpt")
    saved = torch.load(checkpoint, weights_only=True)  # torch's default: plain values only
    assert saved["hyper_parameters"]["optimizer"] == {
        "class_path": "lit_amsgrad.optim.adam_family.AMSGrad",
        "init_args": {"lr": 1e-2, "betas": [0.9, 0.99]},
    }
    assert fit(5, ckpt_path=str(checkpoint)).global_step == 5 > first.global_step


def _train_loss_steps(root: Path) -> list[int]:
    import csv

    (metrics,) = root.rglob("metrics.csv")
    return [int(r["step"]) for r in csv.DictReader(metrics.open()) if r.get("train/loss")]


def test_a_run_shorter_than_the_logging_cadence_logs_its_last_step(workdir):
    """Before: Lightning sent train/* every log_every_n_steps steps only: a 30-step run at
    the default 50 logged no train/loss, and every run lacked its last values."""
    args = [a for a in LOGREG if a != "--trainer.logger=false"]
    for max_steps, expected in ((3, [2]), (12, [4, 9, 11]), (10, [4, 9])):
        root = workdir / f"short{max_steps}"
        main(["fit", *args, f"--trainer.max_steps={max_steps}", "--trainer.max_epochs=-1",
              "--trainer.log_every_n_steps=5", f"--trainer.default_root_dir={root}",
              "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
              f"--trainer.logger.save_dir={root}"])  # fmt: skip
        assert _train_loss_steps(root) == expected, max_steps


class PoisonGradientAt(Callback):
    """A callback (given by class path on the command line) that makes every gradient NaN
    before optimizer step ``step`` + 1, as one bad batch would."""

    def __init__(self, step: int = 10) -> None:
        self.step = step

    def on_after_backward(self, trainer, pl_module) -> None:  # a bad batch's gradients
        if trainer.global_step == self.step:
            for param in pl_module.parameters():
                if param.grad is not None:
                    param.grad.fill_(float("nan"))


def test_a_nan_in_the_second_epoch_stops_and_leaves_only_finite_checkpoints(workdir):
    """The shipped configs stop on NaN (on_nonfinite: stop): the run ends with an error, and
    neither the best checkpoint nor last.ckpt nor last-good.ckpt holds a NaN (with `log`, all
    7,850 weights were NaN in last.ckpt and in the best checkpoint, exit 0)."""
    from callbacks import NonFiniteError

    root = workdir / "nan_run"
    with pytest.raises(NonFiniteError, match="before optimizer step 11"):
        main(["fit", *LOGREG, "--trainer.max_epochs=3", f"--trainer.default_root_dir={root}",
              "--trainer.callbacks+=tests.test_run_records.PoisonGradientAt"])  # fmt: skip
    checkpoints = sorted((root / "checkpoints").glob("*.ckpt"))
    names = [p.name for p in checkpoints]
    assert "last-good.ckpt" in names and any(n.startswith("epoch00") for n in names), names
    for path in checkpoints:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        assert saved["global_step"] <= 10, path.name
        for key, value in saved["state_dict"].items():
            assert torch.isfinite(value).all(), (path.name, key)


def test_a_checkpoint_file_of_a_run_resumes_in_that_run(workdir):
    """A fit from `--ckpt_path runs/<config>/<time>/checkpoints/last.ckpt` continues that run
    (its folder, its W&B run), as `--ckpt_path last` does."""
    first = main(["fit", *WITH_WANDB, "--trainer.max_steps=4", "--trainer.max_epochs=-1"])
    run = Path(first.trainer.default_root_dir)
    resumed = main(["fit", *WITH_WANDB, "--trainer.max_steps=6", "--trainer.max_epochs=-1",
                    "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])  # fmt: skip
    assert Path(resumed.trainer.default_root_dir).resolve() == run.resolve()
    assert resumed.trainer.logger.version == first.trainer.logger.version
    assert resumed.trainer.global_step == 6


def test_every_logger_gets_the_recorded_settings(workdir):
    """The settings went to the first logger only: with CSV before W&B (as figure 2 logs),
    the W&B config had no trainer, seed or resolved precision."""
    import json

    from tests.wandb_records import read_config

    root = workdir / "two_loggers"
    loggers = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(root)}},
        {"class_path": "lit_amsgrad.loggers.RunWandbLogger", "init_args": {"save_dir": str(root)}},
    ]
    main(["fit", *[a for a in LOGREG if a != "--trainer.logger=false"], "--trainer.max_steps=2",
          "--trainer.max_epochs=-1", f"--trainer.default_root_dir={root}",
          f"--trainer.logger={json.dumps(loggers)}"])  # fmt: skip
    (run_file,) = root.glob("wandb/offline-run-*/run-*.wandb")
    assert read_config(run_file)["resolved"]["precision"] == "32-true"
    (hparams,) = root.rglob("hparams.yaml")
    assert "resolved:" in hparams.read_text()
