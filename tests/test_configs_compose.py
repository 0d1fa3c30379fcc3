"""Configs compose: a task fragment and an optimizer fragment merge into one run, every
``<task>_<optimizer>.yaml`` name means exactly its fragments, and the registry drives the
figure runners."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from lit_amsgrad import registry, reproduce, reproduce_figure1, reproduce_figure2
from lit_amsgrad.cli import (
    OPTIMIZER_DIR,
    OVERRIDE_DIR,
    TASK_DIR,
    load_config,
    main,
    resolve_config,
)
from tests.fakedata import write_fake_mnist

SYNTHETIC = {"lr_schedule": "inv_sqrt", "bounds": [-1.0, 1.0]}
IMAGE = {"betas": [0.9, 0.999], "bias_correction": "none", "fused": False}
# What the 14 full configs of earlier versions said (model and optimizer settings): their
# names must keep meaning exactly this.
LEGACY = {
    **{
        f"synthetic_{problem}_{opt}.yaml": (
            {"problem": problem, "num_seeds": seeds},
            {
                "class_path": f"lit_amsgrad.optim.{cls}",
                "lr": lr,
                "betas": betas,
                **SYNTHETIC,
                **extra,
            },
            rounds,
        )
        for problem, seeds, lr, rounds in (
            ("online", 1, 0.5, 100_000),
            ("stochastic", 8, 1.0, 1_000_000),
        )
        for opt, cls, betas, extra in (
            ("adam", "Adam", [0.9, 0.99], {}),
            ("amsgrad", "AMSGrad", [0.9, 0.99], {}),
            ("adamnc", "AdamNC", [0.9], {}),
            ("adashift", "AdaShift", [0.9, 0.99], {"block": "element"}),
        )
    },
    **{
        f"{task}_{opt}.yaml": (
            {"net": net},
            {"class_path": f"lit_amsgrad.optim.{cls}", "lr": lr, "lr_schedule": schedule, **IMAGE},
            None,
        )
        for task, net, lr, schedule in (
            ("cifarnet", "cifarnet", 3e-4, "constant"),
            ("mnist_logreg", "logreg", 1e-2, "inv_sqrt"),
            ("mnist_mlp", "mlp", 1e-3, "constant"),
        )
        for opt, cls in (("adam", "Adam"), ("amsgrad", "AMSGrad"))
    },
}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run folders go here
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sys, "argv", ["train.py"])  # pytest's own arguments are not the CLI's
    return tmp_path


def printed_config(capsys, *configs: str) -> dict:
    """What ``train.py fit --config ... --print_config`` prints, parsed."""
    args = ["fit", *(arg for config in configs for arg in ("--config", config))]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--print_config"])
    assert exited.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_legacy_name_is_its_fragments_and_says_what_it_said(name, in_tmp, capsys):
    stem = name.removesuffix(".yaml")
    task = next(t for t in sorted(p.stem for p in TASK_DIR.glob("*.yaml")) if
                stem.startswith(f"{t}_"))  # fmt: skip
    optimizer = stem.removeprefix(f"{task}_")
    fragments = [str(TASK_DIR / f"{task}.yaml"), str(OPTIMIZER_DIR / f"{optimizer}.yaml")]
    override = OVERRIDE_DIR / name
    fragments += [str(override)] if override.is_file() else []
    assert resolve_config(name) == fragments

    by_name = printed_config(capsys, name)
    assert by_name == printed_config(capsys, *fragments)  # parsed configs, not text
    # the merge LightningCLI does is the one load_config does, for every key
    one_file = in_tmp / f"merged_{name}"
    one_file.write_text(yaml.safe_dump(load_config(name)))
    assert printed_config(capsys, str(one_file)) == by_name

    model, optimizer_settings, rounds = LEGACY[name]
    init_args = by_name["model"]["init_args"]
    assert {k: init_args[k] for k in model} == model
    spec = init_args["optimizer"]
    assert spec["class_path"] == optimizer_settings["class_path"]
    assert {k: spec["init_args"][k] for k in optimizer_settings if k != "class_path"} == {
        k: v for k, v in optimizer_settings.items() if k != "class_path"
    }
    if rounds is not None:
        assert by_name["data"]["init_args"]["num_rounds"] == rounds


def test_two_fragments_merge_into_a_working_fit(in_tmp):
    """The README's composing command, on fake MNIST, a few steps; its run folder is the one
    ``--config mnist_logreg_adam.yaml`` would use."""
    write_fake_mnist(in_tmp / "data", n_train=600, n_test=50)
    cli = main(["fit", "--config", "tasks/mnist_logreg.yaml", "--config", "optimizers/adam.yaml",
                "--data.data_dir=data", "--data.num_workers=0", "--data.val_size=100",
                "--trainer.max_steps=3", "--trainer.limit_val_batches=1",
                "--trainer.logger=false", "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert cli.trainer.state.finished and cli.trainer.global_step == 3
    (optimizer,) = cli.trainer.optimizers
    assert type(optimizer).__name__ == "Adam"
    group = optimizer.param_groups[0]
    assert (group["lr"], group["lr_schedule"]) == (1e-2, "inv_sqrt")  # kept from the task
    run_dir = Path(cli.trainer.default_root_dir)
    assert run_dir.parent.name == "mnist_logreg_adam"


def test_synthetic_task_with_an_optimizer_fragment_fits(in_tmp):
    cli = main(["fit", "--config", "synthetic_stochastic.yaml", "--config", "adashift.yaml",
                "--data.num_rounds=2000", "--trainer.logger=false",
                "--trainer.enable_progress_bar=false"])  # fmt: skip
    (optimizer,) = cli.trainer.optimizers
    assert type(optimizer).__name__ == "AdaShift"
    assert optimizer.param_groups[0]["block"] == "tensor"  # AdaShift's own default: no override
    assert cli.trainer.global_step == 2000
    assert Path(cli.trainer.default_root_dir).parent.name == "synthetic_stochastic_adashift"


def test_every_registered_optimizer_has_a_fragment_and_every_figure_config_resolves():
    for entry in registry.OPTIMIZERS:
        assert registry.fragment(entry.name).is_file(), entry.name
        assert registry.class_path(entry.name).startswith("lit_amsgrad.optim.")
    for task in registry.FIGURE1_TASKS.values():
        for name in registry.optimizers(registry.FIGURE1):
            assert len(resolve_config(f"{task}_{name}.yaml")) >= 2
    for task in registry.FIGURE2_TASKS:
        for name in registry.optimizers(registry.FIGURE2):
            assert len(resolve_config(f"{task}_{name}.yaml")) == 2
    assert reproduce_figure2.TASKS == registry.FIGURE2_TASKS


def test_the_registry_drives_the_figure_runners(monkeypatch, tmp_path, capsys):
    """A line added to the registry is a choice (and a default) of ``reproduce``."""
    new = registry.Entry("newopt", "NewOpt", "tab:olive", (registry.FIGURE1, registry.FIGURE2))
    monkeypatch.setattr(registry, "OPTIMIZERS", (*registry.OPTIMIZERS, new))
    calls = {}
    monkeypatch.setattr(reproduce_figure1, "figure1", lambda out, optimizers, *a: calls.update(
        figure1=optimizers) or {})  # fmt: skip
    monkeypatch.setattr(reproduce_figure2, "figure2", lambda task, out, optimizers, *a: calls.update(
        figure2=optimizers) or {"grid": [], "best": {}})  # fmt: skip
    reproduce.main(["figure1", "--out", str(tmp_path)])
    assert calls["figure1"] == ["adam", "amsgrad", "adamnc", "adashift", "newopt"]
    reproduce.main(["figure2", "--task", "mnist_mlp", "--out", str(tmp_path),
                    "--optimizers", "newopt"])  # fmt: skip
    assert calls["figure2"] == ["newopt"]
    with pytest.raises(SystemExit):  # not in Figure 2
        reproduce.main(["figure2", "--task", "mnist_mlp", "--out", str(tmp_path),
                        "--optimizers", "adamnc"])  # fmt: skip
    assert "invalid choice: 'adamnc'" in capsys.readouterr().err
    assert (registry.label("newopt"), registry.color("newopt")) == ("NewOpt", "tab:olive")


def test_figure2_takes_beta1_from_the_config(monkeypatch, tmp_path):
    point = reproduce_figure2.GridPoint("amsgrad", 0.99, 1e-3)
    args = reproduce_figure2.figure2_args(
        "mnist_mlp", point, reproduce_figure2.Figure2Run(), tmp_path
    )
    assert args[:4] == ["--config", str(TASK_DIR / "mnist_mlp.yaml"),
                        "--config", str(OPTIMIZER_DIR / "amsgrad.yaml")]  # fmt: skip
    assert "--model.init_args.optimizer.init_args.betas=[0.9, 0.99]" in args
    import lit_amsgrad.cli

    config = load_config("mnist_mlp_amsgrad.yaml")
    config["model"]["init_args"]["optimizer"]["init_args"]["betas"] = [0.8, 0.999]
    monkeypatch.setattr(lit_amsgrad.cli, "load_config", lambda name: config)
    args = reproduce_figure2.figure2_args(
        "mnist_mlp", point, reproduce_figure2.Figure2Run(), tmp_path
    )
    assert "--model.init_args.optimizer.init_args.betas=[0.8, 0.99]" in args


@pytest.mark.parametrize("name", ["synthetic_online_adashift", "synthetic_stochastic_adashift"])
def test_adashift_configs_train_with_adashifts_own_eps(name, in_tmp, capsys):
    """jsonargparse keeps the task's AMSGrad defaults the new class accepts when a fragment
    switches the class_path: without its own eps, AdaShift ran with AMSGrad's 1e-8."""
    printed = printed_config(capsys, f"{name}.yaml")
    assert printed["model"]["init_args"]["optimizer"]["init_args"]["eps"] == 1e-10
