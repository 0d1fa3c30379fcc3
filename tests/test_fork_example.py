"""The README's worked example of a new optimizer, run as written: its rule, its diagnostics,
eager and fused, and through train.py."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest
import torch

from lit_amsgrad.cli import REPO_ROOT, main
from lit_amsgrad.errors import ConfigError
from lit_amsgrad.optim import AMSGrad, EMAOptimizer
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


def test_the_example_is_one_short_file():
    lines = [line for line in readme_example().splitlines() if line.strip()]
    assert len(lines) <= 30, len(lines)


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


def test_example_refuses_bad_and_misspelt_arguments(example_class):
    param = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError, match=r"max_decay must be in \[0, 1\], got 1.5"):
        example_class(param, max_decay=1.5)
    with pytest.raises(TypeError, match="'max_decy' \\(did you mean 'max_decay'\\?\\)"):
        example_class(param, max_decy=0.5)


def _reference(grads, lr, betas, eps, max_decay):
    """The rule by hand, in float64: m, v as AMSGrad's; v_hat = max(decay v_hat, v)."""
    x, m, v, v_hat, out = torch.ones(3, dtype=torch.float64), 0.0, 0.0, 0.0, []
    for g in grads:
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        v_hat = torch.maximum(max_decay * torch.as_tensor(v_hat), torch.as_tensor(v))
        x = x - lr * m / (v_hat.sqrt() + eps)
        out.append((x.clone(), (v_hat.sqrt() + eps) / lr))
    return out


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_example_steps_with_its_fading_max_and_the_diagnostics_see_it(example_class, fused):
    grads = [torch.full((3,), g, dtype=torch.float64) for g in (30.0, 1.0, 1.0, 2.0, 1.0, 1.0)]
    param = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    kwargs = dict(lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    optimizer = example_class([param], max_decay=0.7, fused=fused, **kwargs)
    expected = _reference(grads, max_decay=0.7, **kwargs)
    for g, (x, inverse_lr) in zip(grads, expected, strict=True):
        param.grad = g.clone()
        optimizer.step()
        torch.testing.assert_close(param.detach(), x, rtol=1e-12, atol=1e-12)
        # the diagnostics read the same rule: effective step 1 / inverse_lr, exactly
        torch.testing.assert_close(optimizer.inverse_lr(param), inverse_lr, rtol=1e-12, atol=0)


def test_example_fused_matches_eager_on_a_network(example_class):
    runs = []
    for fused in (False, True):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
        optimizer = example_class(net.parameters(), lr=1e-2, max_decay=0.9, fused=fused)
        gen = torch.Generator().manual_seed(1)
        for _ in range(25):
            optimizer.zero_grad()
            x = torch.randn(8, 6, generator=gen)
            net(x).square().mean().backward()
            optimizer.step()
        runs.append(list(net.parameters()))
    for p, q in zip(*runs, strict=True):
        torch.testing.assert_close(p, q)


def _gamma_neg_fracs(optimizer, param):
    from callbacks import OptimizerProbe, moment_view

    logged: dict[int, float] = {}
    probe = OptimizerProbe(
        optimizer, moment_view(optimizer), {id(param): "x"},
        on_metrics=lambda metrics, step: logged.update({step: metrics.get("diag/gamma_neg_frac")}),
        log_every_n_steps=1, per_parameter=False,
    ).attach()  # fmt: skip
    for grad_scale in (30.0, 1.0, 1.0, 1.0, 1.0, 1.0):  # one spike, then small gradients
        param.grad = torch.full_like(param, grad_scale)
        optimizer.step()
    probe.detach()
    return [logged[t] for t in range(2, 7)]


def test_diagnostics_show_the_memory_fading(example_class):
    """The README's claim: after a spike AMSGrad holds v_hat (no coordinate's step grows),
    the example lets it fall back (every coordinate's step grows while it does)."""
    kwargs = dict(lr=0.01, betas=(0.9, 0.99))
    held = torch.nn.Parameter(torch.ones(4))
    assert _gamma_neg_fracs(AMSGrad([held], **kwargs), held) == [0.0] * 5
    fading = torch.nn.Parameter(torch.ones(4))
    assert _gamma_neg_fracs(example_class([fading], max_decay=0.5, **kwargs), fading) == [1.0] * 5


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_example_trains_through_train_py(example_class, run_dir, fused):
    name = f"fork_example.{example_class.__name__}"
    common = ["--config", "mnist_mlp_amsgrad.yaml", f"--data.data_dir={run_dir / 'data'}",
              "--data.val_size=200", "--data.num_workers=0", "--trainer.logger=false"]  # fmt: skip
    example = [f"--model.init_args.optimizer.class_path={name}",
               "--model.init_args.optimizer.init_args.max_decay=0.99",
               f"--model.init_args.optimizer.init_args.fused={str(fused).lower()}"]  # fmt: skip
    before = main(
        ["validate", *common, *example, "--untrained=true"]
    )  # same seed, same initial weights as the fit
    initial_loss = float(before.trainer.callback_metrics["val/loss"])
    fit = main(["fit", *common, *example, "--trainer.max_steps=40", "--trainer.max_epochs=-1"])
    (optimizer,) = fit.trainer.optimizers
    assert type(optimizer).__name__ == example_class.__name__
    assert optimizer.defaults["max_decay"] == 0.99
    assert optimizer.defaults["fused"] is fused
    assert optimizer.defaults["bias_correction"] == "none"  # the config's other init_args kept
    assert fit.trainer.global_step == 40
    final_loss = float(fit.trainer.callback_metrics["val/loss"])
    print(f"held-out loss {initial_loss:.3f} before, {final_loss:.3f} after 40 steps")
    assert final_loss < initial_loss
