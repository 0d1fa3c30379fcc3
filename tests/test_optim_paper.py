"""Paper mode equals the paper's algorithms, written out plainly here, line by line."""

import math
import random

import pytest
import torch

from lit_amsgrad.optim import AdamNC, AMSGrad

T = 300


def _gradient_stream(seed, n):
    rng = random.Random(seed)
    # heavy-tailed magnitudes that change over time, so the max and the mean both matter
    return [
        [rng.gauss(0, 1) * (50 if rng.random() < 0.05 else 1) for _ in range(n)] for _ in range(T)
    ]


def amsgrad_algorithm2(grads, x0, alpha, beta1, lam, beta2, eps, bounds):
    """Algorithm 2 of Reddi et al. (2018), coordinate by coordinate, no bias correction."""
    n = len(x0)
    x, m, v, v_hat = list(x0), [0.0] * n, [0.0] * n, [0.0] * n
    for t, g in enumerate(grads, start=1):
        alpha_t = alpha / math.sqrt(t)
        beta1_t = beta1 * lam ** (t - 1)
        for i in range(n):
            m[i] = beta1_t * m[i] + (1 - beta1_t) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] ** 2
            v_hat[i] = max(v_hat[i], v[i])
            x[i] = x[i] - alpha_t * m[i] / (math.sqrt(v_hat[i]) + eps)
            x[i] = min(max(x[i], bounds[0]), bounds[1])
    return x


def adamnc_algorithm3(grads, x0, alpha, beta1, lam, eps, bounds):
    """Algorithm 3 (AdamNC): beta_2t = 1 - 1/t, so v_t is the mean of the squared gradients."""
    n = len(x0)
    x, m, v = list(x0), [0.0] * n, [0.0] * n
    for t, g in enumerate(grads, start=1):
        alpha_t = alpha / math.sqrt(t)
        beta1_t = beta1 * lam ** (t - 1)
        beta2_t = 1 - 1 / t
        for i in range(n):
            m[i] = beta1_t * m[i] + (1 - beta1_t) * g[i]
            v[i] = beta2_t * v[i] + (1 - beta2_t) * g[i] ** 2
            x[i] = x[i] - alpha_t * m[i] / (math.sqrt(v[i]) + eps)
            x[i] = min(max(x[i], bounds[0]), bounds[1])
    return x


def _run_ours(opt, x, grads):
    for g in grads:
        x.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return x.detach().tolist()


@pytest.mark.parametrize("lam", [1.0, 0.99])
def test_amsgrad_paper_mode_is_algorithm_2(lam):
    grads = _gradient_stream(1, 6)
    x0 = [0.3, -0.2, 0.0, 1.5, -1.0, 0.7]
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = AMSGrad([x], lr=0.1, betas=(0.9, 0.99), eps=1e-8, lr_schedule="inv_sqrt",
                  beta1_decay=lam, bounds=(-2.0, 2.0))  # fmt: skip
    ours = _run_ours(opt, x, grads)
    expected = amsgrad_algorithm2(grads, x0, 0.1, 0.9, lam, 0.99, 1e-8, (-2.0, 2.0))
    assert ours == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("lam", [1.0, 0.99])
def test_adamnc_paper_mode_is_algorithm_3(lam):
    grads = _gradient_stream(2, 5)
    x0 = [0.1, 0.2, -0.3, 0.0, 0.5]
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = AdamNC([x], lr=0.05, betas=(0.9,), eps=1e-8, lr_schedule="inv_sqrt",
                 beta1_decay=lam, bounds=(-1.0, 1.0))  # fmt: skip
    ours = _run_ours(opt, x, grads)
    expected = adamnc_algorithm3(grads, x0, 0.05, 0.9, lam, 1e-8, (-1.0, 1.0))
    assert ours == pytest.approx(expected, rel=1e-10, abs=1e-12)
