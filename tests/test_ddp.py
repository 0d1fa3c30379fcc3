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


def _children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (from /proc: psutil is not a dependency)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the DDP child through /proc")
def test_a_stuck_rank_ends_the_job_with_one_line_within_the_timeout(tmp_path):
    """Before: with one rank stopped (SIGSTOP) the other waited past 180 s, no message
    (torch's default process-group timeout is 30 minutes)."""
    import os
    import signal
    import time

    write_fake_mnist(tmp_path / "data", n_train=5600, n_test=100)
    command = [
        sys.executable, str(REPO / "train.py"), "fit", "--config", "mnist_logreg_amsgrad.yaml",
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
        "--data.data_dir=data", "--data.num_workers=0", "--trainer.max_epochs=1000",
        "--trainer.enable_progress_bar=false", "--ddp_timeout_s=10",
    ]  # fmt: skip
    log = (tmp_path / "log.txt").open("w")  # a file: the stopped child would hold a pipe open
    launcher = subprocess.Popen(command, cwd=tmp_path, env=offline_env(), stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    stopped: list[int] = []
    try:
        deadline = time.time() + 300
        while not list(tmp_path.glob("runs/*/*/checkpoints/epoch*.ckpt")):  # training runs
            assert launcher.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
            assert time.time() < deadline, "the DDP fit did not start"
            time.sleep(0.5)
        (rank1,) = [c for c in _children(launcher.pid) if b"train.py" in
                    Path(f"/proc/{c}/cmdline").read_bytes()]  # fmt: skip
        os.kill(rank1, signal.SIGSTOP)
        stopped.append(rank1)
        started = time.time()
        code = launcher.wait(timeout=240)
        waited = time.time() - started
    finally:
        launcher.kill()
        for pid in stopped:
            os.kill(pid, signal.SIGKILL)
    output = (tmp_path / "log.txt").read_text().strip()
    assert code == 1
    assert output.splitlines()[-1].startswith(
        "error: DDP rank 0 of 2 waited 10 s for the other processes (--ddp_timeout_s): one is "
        "stuck or dead"
    ), output[-3000:]
    assert "Traceback" not in output
    assert waited < 120
