"""A rule is written once: a variant defined here gets a fused step equal to its eager one,
and a rule that cannot be compiled is refused at construction, never run another way."""

import pytest
import torch

from lit_amsgrad.errors import ConfigError
from lit_amsgrad.optim import AMSGrad, EMAOptimizer
from lit_amsgrad.optim import fused as fused_kernels


class AdaMax(EMAOptimizer):
    """A different moment rule: v_t = max(beta_2 v_{t-1}, |g_t|), D_t = v_t + eps (Kingma &
    Ba's AdaMax, with the first moment debiased by hand through step_size)."""

    def step_scalars(self, group, t):
        s = super().step_scalars(group, t)
        s["step_size"] = self.alpha(group, t) / (1 - group["betas"][0] ** t)
        return s

    def update_moments(self, grad, state, s):
        state["exp_avg"].lerp_(grad, s.one_minus_beta1)
        torch.maximum(state["exp_avg_sq"].mul_(s.beta2), grad.abs(), out=state["exp_avg_sq"])

    def denominator(self, state, s):
        return state["exp_avg_sq"] + s.eps


class BranchesOnANumber(AMSGrad):
    """Wrong: a Python branch on a number of the step (frozen into a kernel if it compiled)."""

    def update_moments(self, grad, state, s):
        if s.beta2 > 0.5:
            grad = grad * 2
        super().update_moments(grad, state, s)


class BranchesOnATensor(AMSGrad):
    """Wrong: a Python branch on a tensor's value."""

    def update_moments(self, grad, state, s):
        if state["exp_avg"].sum() > 0:
            grad = grad * 2
        super().update_moments(grad, state, s)


def _train(cls, fused, steps=30, **kwargs):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = cls(net.parameters(), lr=1e-2, fused=fused, **kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        x = torch.randn(16, 5, generator=gen)
        (net(x) - x[:, :1]).square().mean().backward()
        opt.step()
    return list(net.parameters()), opt


def test_a_variant_defined_here_runs_its_own_rule_fused():
    eager, opt = _train(AdaMax, fused=False, weight_decay=0.01)
    fused, fused_opt = _train(AdaMax, fused=True, weight_decay=0.01)
    assert any(key[0][1] is AdaMax for key in fused_kernels._KERNELS)  # its own kernel ran
    for p, q in zip(eager, fused, strict=True):
        torch.testing.assert_close(q, p)
        torch.testing.assert_close(fused_opt.inverse_lr(q), opt.inverse_lr(p))
    # and that rule is not Adam's: the inherited EMA would give another trajectory
    adam, _ = _train(EMAOptimizer, fused=False, weight_decay=0.01, bias_correction="pytorch")
    assert max((p - q).abs().max().item() for p, q in zip(eager, adam, strict=True)) > 1e-3


def test_the_variants_diagnostics_read_its_rule():
    params, opt = _train(AdaMax, fused=False, steps=5)
    for p in params:
        state = opt.state[p]
        alpha = 1e-2 / (1 - 0.9**5)
        torch.testing.assert_close(opt.inverse_lr(p), (state["exp_avg_sq"] + 1e-8) / alpha)


@pytest.mark.parametrize("cls", [BranchesOnANumber, BranchesOnATensor])
def test_a_rule_that_cannot_compile_is_refused_at_construction(cls):
    params = [torch.nn.Parameter(torch.ones(3))]
    with pytest.raises(ConfigError, match=r"fused=True: .* update rule cannot be compiled"):
        cls(params, fused=True)
    cls(params, fused=False)  # eagerly it runs: the branch is evaluated every step
