"""Each bad input gets one clear line naming what is wrong and what is allowed, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fakedata import write_fake_mnist
from tests.subprocess_env import offline_env

REPO = Path(__file__).resolve().parents[1]
SYNTH = ["--config", "synthetic_online_amsgrad.yaml", "--data.num_rounds=2000"]
MNIST = ["--config", "mnist_logreg_amsgrad.yaml", "--data.data_dir=data", "--data.num_workers=0"]


def _write_corrupt(tmp_path):
    (tmp_path / "corrupt.ckpt").write_bytes(b"not a checkpoint at all")


def _write_other_model(tmp_path):
    torch.save({"state_dict": {"x": torch.zeros(1)}}, tmp_path / "other.ckpt")


CASES = {
    "missing config": (["--config", "nope.yaml"], "config 'nope.yaml' not found", None),
    "unknown key": ([*SYNTH, "--model.init_args.nope=1"], "Option 'nope' is not accepted", None),
    "unknown optimizer": (
        [*SYNTH, "--model.init_args.optimizer.class_path=lit_amsgrad.optim.Nope"],
        "has no attribute 'Nope'",
        None,
    ),
    "negative lr": (
        [*SYNTH, "--model.init_args.optimizer.init_args.lr=-1"],
        "lr must be >= 0, got -1.0",
        None,
    ),
    "betas": (
        [*SYNTH, "--model.init_args.optimizer.init_args.betas=[0.9,1.5]"],
        "betas[1] must be in [0, 1), got 1.5",
        None,
    ),
    "unknown net": ([*MNIST, "--model.init_args.net=resnet"], "net must be one of", None),
    "batch not divisible by the world size": (
        [
            *MNIST,
            "--data.batch_size=127",
            "--trainer.accelerator=cpu",
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
        ],
        "must be divisible by the number of processes (trainer.world_size=2)",
        None,
    ),  # fmt: skip
    "missing data": (
        ["--config", "mnist_logreg_amsgrad.yaml", "--data.data_dir=empty"],
        "MNIST/raw",
        None,
    ),
    "a run that turns non-finite, with on_nonfinite=stop": (
        [*SYNTH, "--model.init_args.big=3e38", "--trainer.callbacks.on_nonfinite=stop"],
        "non-finite values (NaN/inf) after optimizer step 1000: optimizer state 'exp_avg_sq' of 'x'",
        None,
    ),
    "missing checkpoint": ([*SYNTH, "--ckpt_path", "gone.ckpt"], "gone.ckpt: no such file", None),
    "corrupt checkpoint": (
        [*SYNTH, "--ckpt_path", "corrupt.ckpt"],
        "corrupt.ckpt is not a whole checkpoint (23 bytes",
        _write_corrupt,
    ),
    "negative max_epochs": (
        [*SYNTH, "--trainer.max_epochs=-5"],
        "`max_epochs` must be a non-negative integer or -1. You passed in -5.",
        None,
    ),
    "a misspelt optimizer argument": (
        [*SYNTH, "--model.init_args.optimizer.init_args.beta=0.5"],
        "model: Option 'beta' is not accepted.",
        None,
    ),
    "a string lr": (
        [*SYNTH, "--model.init_args.optimizer.init_args.lr=fast"],
        "Expected a <class 'float'>. Got value: fast.",
        None,
    ),
    "a tab in a YAML config": (
        [*SYNTH, "--config", "tab.yaml"],
        "config tab.yaml is not valid YAML at line 2, column 1: found character '\\t' that cannot start any token (indent YAML with spaces, not tabs)",
        lambda root: (root / "tab.yaml").write_text("trainer:\n\tmax_epochs: 2\n"),
    ),
    "top-level optimizer flag": (
        [*SYNTH, "--optimizer=torch.optim.SGD", "--optimizer.lr=0.1"],
        "unrecognized arguments: --optimizer=torch.optim.SGD",
        None,
    ),
    "checkpoint of another model": (
        [*MNIST, "--ckpt_path", "other.ckpt"],
        "is a checkpoint of another model than ImageClassifier",
        _write_other_model,
    ),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    write_fake_mnist(root / "data", n_train=5100, n_test=50)
    (root / "empty").mkdir()
    return root


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(case, workdir):
    args, expected, prepare = CASES[case]
    if prepare is not None:
        prepare(workdir)
    env = offline_env()
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "fit", *args, "--trainer.logger=false"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    message = result.stderr[result.stderr.rfind("\nerror: ") + 1 :]
    assert message.startswith("error: ") and expected in message, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
