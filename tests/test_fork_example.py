"""The README's worked example of a new optimizer, run as written through train.py."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest
import torch

from lit_amsgrad.cli import REPO_ROOT, main
from lit_amsgrad.optim import EMAOptimizer
from tests.fakedata import write_fake_mnist

SECTION = re.compile(
    r"<!-- section: reproduce-and-fork -->(.*)<!-- end section: reproduce-and-fork -->", re.S
)
EXAMPLE = re.compile(
    r"<!-- fork-example -->\s*```python\n(.*?)```\s*<!-- end fork-example -->", re.S
)


def readme_example() -> str:
    """The python block between the fork-example markers of the README's own section."""
    section = SECTION.search((REPO_ROOT / "README.md").read_text())
    assert section, "README.md lacks the reproduce-and-fork section"
    example = EXAMPLE.search(section.group(1))
    assert example, "the section lacks the <!-- fork-example --> python block"
    return example.group(1)


@pytest.fixture
def example_class(tmp_path, monkeypatch) -> type[EMAOptimizer]:
    """The example written as a module on sys.path, and the optimizer class it defines."""
    (tmp_path / "fork_example.py").write_text(readme_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fork_example", None)
    module = importlib.import_module("fork_example")
    (cls,) = [c for _, c in inspect.getmembers(module, inspect.isclass)
              if issubclass(c, EMAOptimizer) and c.__module__ == "fork_example"]  # fmt: skip
    return cls


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    write_fake_mnist(tmp_path / "data", n_train=2200, n_test=50)
    return tmp_path


def test_example_validates_its_argument(example_class):
    with pytest.raises(ValueError, match="warmup"):
        example_class([torch.nn.Parameter(torch.zeros(2))], warmup=0)


def test_example_steps_with_a_linear_warmup_and_the_running_max(example_class):
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = example_class([param], lr=0.1, betas=(0.9, 0.99), warmup=4)
    for t, grad_scale in enumerate((30.0, 1.0, 1.0, 1.0, 1.0, 1.0), start=1):
        before = param.detach().clone()
        param.grad = torch.full_like(param, grad_scale)
        optimizer.step()
        alpha = 0.1 * min(1.0, t / 4)
        state = optimizer.state[param]
        assert state["step_size"] == pytest.approx(alpha)
        # the update is exactly -alpha m_t / (sqrt(v_hat_t) + eps), v_hat the running max
        v_hat = state["max_exp_avg_sq"]
        assert torch.all(v_hat >= state["exp_avg_sq"])
        if t > 1:
            assert torch.all(v_hat > state["exp_avg_sq"])  # the first big gradient is remembered
        expected = before - alpha * state["exp_avg"] / (v_hat.sqrt() + 1e-8)
        torch.testing.assert_close(param.detach(), expected)
        # and the diagnostics see that step: effective step size 1 / inverse_lr
        denominator = state["max_exp_avg_sq"].sqrt() + 1e-8
        torch.testing.assert_close(optimizer.inverse_lr(param), denominator / alpha)


def test_diagnostics_show_the_warmup_as_a_growing_step(example_class):
    """The README's claim: while alpha_t grows and v_hat is held, Gamma_t < 0 everywhere
    (diag/gamma_neg_frac = 1); once alpha_t is constant, no coordinate's step grows."""
    from callbacks import OptimizerProbe, moment_view

    param = torch.nn.Parameter(torch.ones(4))
    optimizer = example_class([param], lr=0.01, betas=(0.9, 0.99), warmup=5)
    logged: dict[int, float] = {}
    probe = OptimizerProbe(
        optimizer, moment_view(optimizer), {id(param): "x"},
        on_metrics=lambda metrics, step: logged.update({step: metrics.get("diag/gamma_neg_frac")}),
        log_every_n_steps=1, per_parameter=False,
    ).attach()  # fmt: skip
    for grad_scale in (30.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0):  # v_hat holds the first g^2
        param.grad = torch.full_like(param, grad_scale)
        optimizer.step()
    probe.detach()
    assert [logged[t] for t in range(2, 6)] == [1.0] * 4  # warm-up: alpha_t grows
    assert [logged[t] for t in range(6, 9)] == [0.0] * 3  # constant alpha_t, v_hat held


def test_example_trains_through_train_py(example_class, run_dir):
    name = f"fork_example.{example_class.__name__}"
    common = ["--config", "mnist_mlp_amsgrad.yaml", f"--data.data_dir={run_dir / 'data'}",
              "--data.val_size=200", "--data.num_workers=0", "--trainer.logger=false"]  # fmt: skip
    example = [f"--model.init_args.optimizer.class_path={name}",
               "--model.init_args.optimizer.init_args.warmup=80"]  # fmt: skip
    before = main(["validate", *common, *example])  # same seed, same initial weights as the fit
    initial_loss = float(before.trainer.callback_metrics["val/loss"])
    fit = main(["fit", *common, *example, "--trainer.max_steps=40", "--trainer.max_epochs=-1"])
    (optimizer,) = fit.trainer.optimizers
    assert type(optimizer).__name__ == example_class.__name__
    assert optimizer.defaults["warmup"] == 80
    assert optimizer.defaults["bias_correction"] == "none"  # the config's other init_args kept
    lr, t = optimizer.defaults["lr"], fit.trainer.global_step
    assert t == 40
    state = optimizer.state[next(fit.model.parameters())]
    assert state["step_size"] == pytest.approx(lr * t / 80)  # halfway through the warm-up
    final_loss = float(fit.trainer.callback_metrics["val/loss"])
    print(f"held-out loss {initial_loss:.3f} before, {final_loss:.3f} after {t} steps")
    assert final_loss < initial_loss
