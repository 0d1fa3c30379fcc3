"""The W&B sweep files drive train.py unchanged: every argument an agent passes is accepted."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args, load_sweep_config

from lit_amsgrad import registry
from lit_amsgrad.cli import REPO_ROOT, load_config, main, resolve_config

SWEEP_DIR = REPO_ROOT / "configs" / "sweeps"
SWEEPS = sorted(p.name for p in SWEEP_DIR.glob("*.yaml"))
OPTIMIZER = "model.init_args.optimizer"


def agent_points(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Grid points in which every value of every parameter appears at least once."""
    params = {k: v["values"] for k, v in sweep["parameters"].items()}
    n = max(len(values) for values in params.values())
    return [{k: values[i % len(values)] for k, values in params.items()} for i in range(n)]


def agent_command(sweep: dict[str, Any], point: dict[str, Any]) -> list[str]:
    """The command line W&B's agent runs for one point, built with the agent's own helper."""
    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
    macros = {"env": [], "interpreter": [sys.executable], "program": [sweep["program"]]}
    macros["args"] = args["args"]
    command: list[str] = []
    for chunk in sweep["command"]:
        command += macros[chunk[2:-1]] if chunk.startswith("${") else [str(chunk)]
    return command


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run folders go here
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sys, "argv", ["train.py"])


def test_there_is_a_sweep_per_image_task():
    assert set(registry.FIGURE2_TASKS) == {"mnist_logreg", "mnist_mlp", "cifarnet"}
    assert {f"{task}.yaml" for task in registry.FIGURE2_TASKS} <= set(SWEEPS)


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_is_the_papers_grid(name):
    sweep = load_sweep_config(str(SWEEP_DIR / name))  # what `wandb sweep` reads
    assert sweep["method"] == "grid"
    assert sweep["metric"] == {"name": "val/loss", "goal": "minimize"}
    params = sweep["parameters"]
    # the optimizers the registry puts in Figure 2, as their fragments name their classes
    figure2 = registry.optimizers(registry.FIGURE2)
    assert params[f"{OPTIMIZER}.class_path"]["values"] == [registry.class_path(n) for n in figure2]
    assert params[f"{OPTIMIZER}.init_args.betas"]["values"] == [[0.9, 0.99], [0.9, 0.999]]
    lrs = params[f"{OPTIMIZER}.init_args.lr"]["values"]
    assert len(lrs) >= 3 and lrs == sorted(lrs) and all(0 < lr < 1 for lr in lrs)
    assert (REPO_ROOT / sweep["program"]).is_file()
    assert "${args}" in sweep["command"] and "fit" in sweep["command"]


@pytest.mark.parametrize("name", SWEEPS)
def test_every_agent_command_is_accepted_by_train_py(name, in_tmp, capsys):
    sweep = yaml.safe_load((SWEEP_DIR / name).read_text())
    config = sweep["command"][sweep["command"].index("--config") + 1]
    (path,) = resolve_config(config)  # the task fragment alone: the sweep picks the class
    assert Path(path) == REPO_ROOT / "configs" / "tasks" / name
    kept = load_config(config)["model"]["init_args"]
    for point in agent_points(sweep):
        command = agent_command(sweep, point)
        assert command[:2] == [sys.executable, "train.py"]
        with pytest.raises(SystemExit) as exited:  # train.py's main(), parsing only
            main([*command[2:], "--print_config"])
        assert exited.value.code in (0, None)
        printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["optimizer"]
        assert printed["class_path"] == point[f"{OPTIMIZER}.class_path"]
        init_args = printed["init_args"]
        assert init_args["lr"] == point[f"{OPTIMIZER}.init_args.lr"]
        assert list(init_args["betas"]) == point[f"{OPTIMIZER}.init_args.betas"]
        # switching class_path keeps the config's other init_args (paper mode, schedule)
        for key in ("bias_correction", "lr_schedule"):
            assert init_args[key] == kept["optimizer"]["init_args"][key]
        optimizer = build_optimizer(printed)
        assert optimizer.defaults["lr"] == init_args["lr"]


def build_optimizer(spec: dict[str, Any]) -> torch.optim.Optimizer:
    """Instantiate a printed class_path/init_args on one parameter: the arguments are valid."""
    module, name = spec["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    return cls([torch.nn.Parameter(torch.zeros(3))], **spec["init_args"])
