"""train.py: config names resolve to configs/, run folders, W&B offline, Figure 1 end to end."""

import subprocess
import sys
from pathlib import Path

import pytest

from lit_amsgrad.cli import (
    CONFIG_DIR,
    ConfigNotFoundError,
    main,
    resolve_config,
    resolve_config_args,
)
from tests.subprocess_env import offline_env

REPO = Path(__file__).resolve().parents[1]


def test_bare_config_name_resolves_to_configs_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = str(CONFIG_DIR / "tasks" / "synthetic_online.yaml")
    expected = [task, str(CONFIG_DIR / "optimizers" / "amsgrad.yaml")]
    assert resolve_config("synthetic_online_amsgrad.yaml") == expected
    assert resolve_config("synthetic_online_amsgrad") == expected
    assert resolve_config("tasks/synthetic_online.yaml") == [task]
    assert resolve_config("synthetic_online") == [task]  # a fragment by its bare name
    assert resolve_config(str(CONFIG_DIR / "synthetic_online_amsgrad.yaml")) == expected
    local = tmp_path / "mine.yaml"
    local.write_text("seed_everything: 1\n")
    assert resolve_config(str(local)) == [str(local)]
    assert resolve_config_args(["fit", "--config=synthetic_online_adam"])[1:] == [
        "--config=" + task,
        "--config=" + str(CONFIG_DIR / "optimizers" / "adam.yaml"),
    ]


def test_missing_config_names_the_available_ones():
    with pytest.raises(
        ConfigNotFoundError, match=r"'nope.yaml' not found.*synthetic_online_amsgrad"
    ):
        resolve_config("nope.yaml")


def test_missing_config_exits_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "fit", "--config", "nope.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "config 'nope.yaml' not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("optimizer", "sign"), [("amsgrad", -1), ("adam", +1)])
def test_synthetic_online_config_reaches_the_paper_result(optimizer, sign, tmp_path, monkeypatch):
    """AMSGrad ends at x <= -0.9 (the optimum), Adam at x >= 0.9 (the wrong end)."""
    monkeypatch.chdir(tmp_path)
    cli = main(
        ["fit", "--config", f"synthetic_online_{optimizer}.yaml", "--trainer.logger=false",
         "--trainer.enable_progress_bar=false"]
    )  # fmt: skip
    x = float(cli.model.x.detach())
    assert sign * x >= 0.9
    assert cli.trainer.global_step == 100_000  # every round is a real optimizer step


def test_print_config_shows_the_optimizer(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "fit", "--config", "synthetic_online_amsgrad.yaml",
         "--print_config"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "class_path: lit_amsgrad.optim.AMSGrad" in result.stdout
    assert "lr_schedule: inv_sqrt" in result.stdout
    assert not any(tmp_path.iterdir())  # printing a config writes nothing


@pytest.mark.slow
def test_readme_command_runs_twice_into_run_folders(tmp_path):
    """The README's main command, twice in one directory: W&B offline, nothing in the cwd."""
    env = offline_env()
    env.pop("WANDB_API_KEY", None)
    command = [sys.executable, str(REPO / "train.py"), "fit", "--config",
               "synthetic_online_amsgrad.yaml", "--data.num_rounds=5000"]  # fmt: skip
    for _ in range(2):
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    run_dirs = sorted((tmp_path / "runs" / "synthetic_online_amsgrad").iterdir())
    assert len(run_dirs) >= 1
    for run_dir in run_dirs:
        assert (run_dir / "config.yaml").is_file()
        assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.parametrize("config", sorted(p.name for p in (CONFIG_DIR / "tasks").glob("*.yaml")))
def test_every_task_config_turns_the_diagnostics_on(config):
    import yaml

    callbacks = yaml.safe_load((CONFIG_DIR / "tasks" / config).read_text())["trainer"]["callbacks"]
    assert "callbacks.OptimizerDiagnostics" in [c["class_path"] for c in callbacks]
