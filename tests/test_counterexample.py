"""The paper's Figure 1: Adam goes to the wrong end of [-1, 1], AMSGrad to the optimum x = -1.

Runs the optimizers on the exact loss functions of ``SyntheticConvexModule`` (its
``loss_coefficients``); several seeds are several coordinates of one parameter vector.
"""

import pytest
import torch

from lit_amsgrad.models.synthetic import loss_coefficients
from lit_amsgrad.optim import Adam, AdamNC, AdaShift, AMSGrad

PAPER = dict(betas=(0.9, 0.99), lr_schedule="inv_sqrt", bounds=(-1.0, 1.0))
OPTIMIZERS = {
    "adam": (Adam, PAPER),
    "amsgrad": (AMSGrad, PAPER),
    "adamnc": (AdamNC, {**PAPER, "betas": (0.9,)}),
    "adashift": (AdaShift, {**PAPER, "block": "element"}),
}


def play(name, problem, rounds, seeds, lr, chunk=10_000):
    """Returns (final x, x averaged over the last 10% of rounds, average regret), per seed."""
    cls, kwargs = OPTIMIZERS[name]
    x = torch.zeros(seeds, requires_grad=True)
    opt = cls([x], lr=lr, **kwargs)
    tail, tail_start = torch.zeros(seeds), int(0.9 * rounds)
    loss, coef_sum = (
        torch.zeros(seeds, dtype=torch.float64),
        torch.zeros(seeds, dtype=torch.float64),
    )
    for start in range(1, rounds + 1, chunk):
        ts = torch.arange(start, min(start + chunk, rounds + 1))
        coefs = loss_coefficients(problem, ts, seeds, seed=0)
        for t, c in zip(ts.tolist(), coefs, strict=True):
            loss += (c * x.detach()).double()
            x.grad = c.clone()
            opt.step()
            if t > tail_start:
                tail += x.detach()
        coef_sum += coefs.double().sum(0)
    regret = (loss + coef_sum.abs()) / rounds
    return x.detach(), tail / (rounds - tail_start), regret


def test_online_adam_goes_to_plus_one_and_amsgrad_to_minus_one():
    adam_x, _, adam_regret = play("adam", "online", 100_000, 1, lr=0.5)
    ams_x, _, ams_regret = play("amsgrad", "online", 100_000, 1, lr=0.5)
    assert adam_x.item() >= 0.9
    assert ams_x.item() <= -0.9
    assert ams_regret.item() < adam_regret.item()


@pytest.mark.parametrize("name", ["adamnc", "adashift"])
def test_online_adamnc_and_adashift_reach_the_optimum_side(name):
    x, _, _ = play(name, "online", 100_000, 1, lr=0.5)
    assert x.item() < 0


@pytest.mark.slow
def test_stochastic_over_eight_seeds():
    """Noisy, so judged over 8 seeds on each seed's iterate averaged over the last 10%."""
    results = {name: play(name, "stochastic", 1_000_000, 8, lr=1.0) for name in OPTIMIZERS}
    adam_tail, ams_tail = results["adam"][1], results["amsgrad"][1]
    assert adam_tail.mean() >= 0.5
    assert ams_tail.mean() <= -0.5
    assert results["amsgrad"][2].mean() < results["adam"][2].mean()
    assert results["adamnc"][1].mean() < 0
    assert results["adashift"][1].mean() < 0
