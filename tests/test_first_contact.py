"""A new user's first commands: `--help` says what the tool is and lists the shipped configs
(fast, without Lightning), `fit --help` lists this project's classes, the quickstart prints
none of the known-harmless warnings and ends with a line that says what the result means."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lit_amsgrad.config_files import OPTIMIZER_DIR, TASK_DIR
from lit_amsgrad.quiet import HARMLESS_LOG_LINES
from tests.subprocess_env import offline_env

REPO = Path(__file__).resolve().parents[1]


def _train(
    *args: str, cwd: Path, python_flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *python_flags, str(REPO / "train.py"), *args],
        cwd=cwd, env=offline_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize("args", [["--help"], ["-h"], []], ids=["--help", "-h", "nothing"])
def test_top_level_help_says_what_the_tool_is_and_lists_the_configs(tmp_path, args):
    """Before: 'Lightning Trainer command line tool', subcommand texts cut mid-sentence, no
    config named, and ~6 s to import Lightning first."""
    done = _train(*args, cwd=tmp_path, python_flags=("-X", "importtime"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "On the Convergence of Adam and Beyond" in done.stdout
    for fragment in [*TASK_DIR.glob("*.yaml"), *OPTIMIZER_DIR.glob("*.yaml")]:
        assert re.search(rf"^    {fragment.stem} +\S", done.stdout, re.M), fragment.stem
    assert "synthetic_online_amsgrad.yaml" in done.stdout
    imported = re.findall(r"\| +([\w.]+)$", done.stderr, re.M)
    assert imported and not [m for m in imported if m.split(".")[0] in ("lightning", "torch")]


@pytest.mark.slow
def test_fit_help_lists_this_projects_classes(tmp_path):
    """Before: the known subclasses were torch's and lightning.LightningModule only."""
    done = _train("fit", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    text = re.sub(r"\s+", " ", done.stdout)
    for name in ("lit_amsgrad.models.ImageClassifier", "lit_amsgrad.models.SyntheticConvexModule",
                 "datamodules.MNISTDataModule", "datamodules.CIFAR10DataModule",
                 "callbacks.OptimizerDiagnostics"):  # fmt: skip
        assert name in text, name
    model = _train("fit", "--model.help", "lit_amsgrad.models.ImageClassifier", cwd=tmp_path)
    text = re.sub(r"\s+", " ", model.stdout)
    for name in (
        "lit_amsgrad.optim.AMSGrad",
        "lit_amsgrad.optim.AdamNC",
        "lit_amsgrad.optim.AdaShift",
    ):
        assert name in text, name


HARMLESS_ELSEWHERE = ("The anonymous setting has no effect", "isinstance(treespec, LeafSpec)")


@pytest.mark.slow
def test_the_quickstart_is_quiet_and_ends_with_what_the_result_means(tmp_path):
    """Before: a litlogger advertisement, W&B's 'anonymous setting', a LeafSpec deprecation and
    'already configured with model summary callbacks' on every first run; the run ended with
    a progress bar at x: -0.984 and no word on whether that is good."""
    done = _train("fit", "--config", "synthetic_online_amsgrad.yaml", "--data.num_rounds=3000",
                  cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    for line in (*HARMLESS_LOG_LINES, *HARMLESS_ELSEWHERE):
        assert line not in output, line
    lines = done.stdout.strip().splitlines()
    (result,) = [line for line in lines if line.startswith("result: ")]
    assert re.fullmatch(
        r"result: x = [+-]\d\.\d{3} after 3,000 rounds; the optimum is x = -1 \(.+\), "
        r"average regret \S+",
        result,
    ), result
    (run_dir,) = (tmp_path / "runs" / "synthetic_online_amsgrad").iterdir()
    assert f"run folder: {run_dir.relative_to(tmp_path)}" in lines
    assert any(line.startswith("sync to W&B: wandb sync ") for line in lines)
    assert f"draw it: python -m lit_amsgrad.report {run_dir.relative_to(tmp_path)}" in lines


def test_the_result_line_says_which_side_of_the_optimum_the_iterate_ended(monkeypatch):
    import torch

    from lit_amsgrad.fit_summary import fit_summary
    from lit_amsgrad.models import SyntheticConvexModule

    model = SyntheticConvexModule(problem="online")
    trainer = type("T", (), {"callback_metrics": {}})()
    model.rounds_played.fill_(10)
    for x, where in [(-0.99, "at the optimum"), (0.9, "on the wrong side"), (-0.5, "between")]:
        model.x.data = torch.tensor([x])
        assert where in fit_summary(trainer, model)


def test_the_result_line_of_a_classifier_names_its_last_metrics_and_best_score():
    import torch

    from lit_amsgrad.fit_summary import fit_summary

    checkpoint = type("C", (), {"best_model_score": torch.tensor(0.91), "monitor": "val/acc"})()
    trainer = type("T", (), {"global_step": 1234, "checkpoint_callback": checkpoint,
                             "callback_metrics": {"val/acc": torch.tensor(0.9), "val/loss": torch.tensor(0.3)}})()  # fmt: skip
    assert fit_summary(trainer, torch.nn.Linear(1, 1)) == (
        "result after 1,234 optimizer steps: val/loss 0.3000, val/acc 0.9000, best val/acc 0.9100"
    )
