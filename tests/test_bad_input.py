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
    "a run folder that cannot be written": (
        [*SYNTH, "--trainer.default_root_dir=a_file/run"],
        "run folder a_file/run is not writable (Not a directory)",
        lambda root: (root / "a_file").write_text("not a folder"),
    ),
    "fp16 AMP on a CPU": (
        [*SYNTH, "--trainer.accelerator=cpu", "--trainer.precision=16-mixed"],
        "trainer.precision=16-mixed is not available on cpu (Lightning would run bf16-mixed)",
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


# --- damaged data files: named, with what is wrong (issue 13, point 7) ---------------------


def _fake_cifar(root: Path) -> Path:
    from tests.fakedata import write_fake_cifar10

    write_fake_cifar10(root / "data", n_per_batch=20, n_test=10)
    return root / "data" / "cifar-10-batches-py"


def _truncate(path: Path, keep: int = 500) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _cifar_error(root: Path, download: bool) -> str:
    from datamodules import CIFAR10DataModule
    from datamodules.vision import DatasetFileError

    data = CIFAR10DataModule(root / "data", val_size=10, num_workers=0, download=download)
    with pytest.raises(DatasetFileError) as caught:
        data.prepare_data()
        data.setup("fit")
    return str(caught.value)


@pytest.mark.parametrize("download", [True, False])
def test_fake_cifar10_is_named_as_not_the_official_files(download, tmp_path):
    """Files that are all there but whose md5 differs: the first one is named with its md5."""
    folder = _fake_cifar(tmp_path)
    message = _cifar_error(tmp_path, download)
    assert "\n" not in message and "not found" not in message
    assert f"'{(folder / 'data_batch_1').resolve()}' is not the official one (md5 " in message
    assert "expected c99cafc152244af753f735de768cd75f" in message  # torchvision's md5


def test_truncated_cifar10_pickle_is_named(tmp_path, monkeypatch):
    from tests.fakedata import skip_cifar10_md5

    folder = _fake_cifar(tmp_path)
    skip_cifar10_md5(monkeypatch)  # past the md5 check, into the pickle
    _truncate(folder / "data_batch_3")
    message = _cifar_error(tmp_path, download=False)
    assert "\n" not in message
    assert f"'{(folder / 'data_batch_3').resolve()}' is not a readable CIFAR-10 pickle" in message
    assert "truncated" in message


def test_truncated_mnist_file_is_named(tmp_path):
    from datamodules import MNISTDataModule
    from datamodules.vision import DatasetFileError

    write_fake_mnist(tmp_path / "data", n_train=50, n_test=10)
    images = tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    _truncate(images, keep=5000)
    data = MNISTDataModule(tmp_path / "data", val_size=10, num_workers=0)
    with pytest.raises(DatasetFileError, match="is not a readable IDX file") as caught:
        data.prepare_data()
        data.setup("fit")
    assert f"'{images.resolve()}'" in str(caught.value)


CIFAR = ["--config", "cifarnet_amsgrad.yaml", "--data.data_dir=data", "--data.num_workers=0"]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["md5 mismatch", "truncated pickle"])
def test_damaged_cifar10_is_one_error_line_naming_the_file(damage, tmp_path):
    from tests.fakedata import CIFAR10_MD5_PATCH

    folder = _fake_cifar(tmp_path)
    patch = ""
    if damage == "truncated pickle":
        _truncate(folder / "data_batch_2")
        patch = CIFAR10_MD5_PATCH + "; "
    argv = [str(REPO / "train.py"), "fit", *CIFAR, "--trainer.logger=false"]
    code = f"{patch}import runpy, sys; sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=offline_env(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    bad = "data_batch_1" if damage == "md5 mismatch" else "data_batch_2"
    assert f"{(folder / bad).resolve()}'" in line
    assert ("not the official one" if damage == "md5 mismatch" else "truncated") in line
