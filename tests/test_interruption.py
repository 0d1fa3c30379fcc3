"""SIGTERM during fit leaves a checkpoint that resumes; the W&B offline run is closed."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lit_amsgrad.cli import load_config
from tests.subprocess_env import offline_env

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 400_000  # long enough to be interrupted on any machine


def _config(tmp_path: Path) -> Path:
    config = load_config("synthetic_online_amsgrad.yaml")
    config["trainer"]["enable_checkpointing"] = True
    config["trainer"]["callbacks"].append(
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"every_n_train_steps": 1000, "save_top_k": -1},
        }
    )
    path = tmp_path / "interrupted.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path):
    env = offline_env()
    command = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(_config(tmp_path)),
               f"--data.num_rounds={ROUNDS}", "--trainer.enable_progress_bar=false"]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("runs/interrupted/*/config.yaml")):  # training has started
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.5)
    time.sleep(5)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 143, output[-3000:]
    (checkpoint,) = tmp_path.glob("runs/interrupted/*/checkpoints/last.ckpt")
    step = torch.load(checkpoint, weights_only=False)["global_step"]
    assert 0 < step < ROUNDS
    assert list(tmp_path.glob("runs/interrupted/*/wandb/offline-run-*/run-*.wandb"))

    resume = [*command, "--ckpt_path", "last", f"--trainer.max_steps={step + 2000}"]
    done = subprocess.run(resume, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "interrupted").iterdir()  # resumed in the same folder
    steps = {torch.load(c, weights_only=False)["global_step"] for c in run_dir.rglob("*.ckpt")}
    assert {step, step + 1000, step + 2000} <= steps  # it went on from the interrupted step
    assert checkpoint.is_file()  # the interruption checkpoint outlives the resumed run


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.3, 1.0], ids=["at-once", "a-second-in"])
def test_sigterm_before_training_exits_143_with_one_line(tmp_path, after_s):
    """Before: killed silently by the default action (exit -15), or, once Lightning was
    imported, nothing said why the run folder is empty."""
    command = [sys.executable, str(REPO / "train.py"), "fit", "--config",
               "synthetic_online_amsgrad.yaml", "--trainer.enable_progress_bar=false"]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, env=offline_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(after_s)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "error: interrupted by SIGTERM before training began: nothing was trained or saved; "
        "run the same command again"
    )
    assert "Traceback" not in err
