"""The diagnostics' logging step compiled into one kernel gives what the eager step gives.

``callbacks.stats.device_stats`` is one definition that runs eagerly or compiled
(``callbacks.compiled_stats``); ``compile=None`` compiles only when the run repays it. Every
test here uses the same small network, so the process compiles each signature once.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import callbacks.compiled_stats as compiled_stats
from callbacks import OptimizerDiagnostics
from callbacks.adapters import moment_view, moments_of
from callbacks.probe import OptimizerProbe
from lit_amsgrad.optim import AMSGrad


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))


def _run(compile, steps=6, expected_steps=None, optimizer=AMSGrad):
    """Metrics and histograms of every step of a short fit, with the probe's ``compile``."""
    net = _net()
    opt = optimizer(net.parameters(), lr=0.05)
    names = {id(p): name for name, p in net.named_parameters()}
    metrics, hists = [], []
    probe = OptimizerProbe(
        opt,
        moment_view(opt),
        names,
        on_metrics=lambda m, s: metrics.append((s, m)),
        on_histograms=lambda h, s: hists.append((s, h)),
        log_every_n_steps=1,
        histogram_every_n_steps=2,
        count_nonfinite=True,
        compile=compile,
        expected_steps=expected_steps,
    ).attach()
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return metrics, hists, probe


def _assert_same(a, b):
    assert [step for step, _ in a] == [step for step, _ in b]
    for (_, ma), (_, mb) in zip(a, b, strict=True):
        assert ma.keys() == mb.keys()
        for key in ma:
            assert ma[key] == pytest.approx(mb[key], rel=1e-12, abs=0), key


def test_compiled_logging_step_gives_the_eager_metrics_and_histograms():
    eager, eager_hists, _ = _run(compile=False)
    compiled, compiled_hists, probe = _run(compile=True)
    assert not probe.device_stats._failed and compiled_stats._KERNELS  # it ran compiled
    assert any("diag/gamma_neg_frac" in m for _, m in compiled)  # Gamma and vhat were compared
    assert all("diag/vhat_active_frac/0.weight" in m for _, m in compiled)
    assert all(m["diag/nonfinite"] == 0 for _, m in compiled)
    _assert_same(eager, compiled)
    assert len(eager_hists) == len(compiled_hists) == 3
    for (_, ha), (_, hb) in zip(eager_hists, compiled_hists, strict=True):
        assert ha.keys() == hb.keys()
        for key, (counts, edges) in ha.items():
            assert counts.tolist() == hb[key][0].tolist(), key
            assert edges.tolist() == pytest.approx(hb[key][1].tolist(), rel=1e-12)


def test_compiled_logging_step_counts_nonfinite_state_as_eager_does():
    """NaN in the state: the count and the binning of NaN (bin 0) agree."""

    def poisoned(compile):
        metrics, _, probe = _run(compile=compile, steps=2)
        weight = probe.optimizer.param_groups[0]["params"][0]
        probe.optimizer.state[weight]["exp_avg"][0, :2] = float("nan")
        probe.optimizer.state[weight]["max_exp_avg_sq"][1, 0] = float("inf")
        with torch.no_grad():  # the logging step again, on the poisoned state
            probe._observe(log=True, hist=False, keep=False)
        return metrics[-1][1]

    eager, compiled = poisoned(False), poisoned(True)
    assert eager["diag/nonfinite"] == compiled["diag/nonfinite"] == 3
    assert eager.keys() == compiled.keys()
    for key, value in eager.items():
        if math.isnan(value):
            assert math.isnan(compiled[key]), key
        else:
            assert compiled[key] == pytest.approx(value, rel=1e-12, abs=0), key


def test_compile_none_stays_eager_in_a_short_fit(monkeypatch):
    kernels = dict(compiled_stats._KERNELS)
    monkeypatch.setattr(compiled_stats, "_KERNELS", kernels)
    _, _, probe = _run(compile=None, expected_steps=6)
    assert probe.device_stats.compile is None
    assert probe.device_stats.compile_seconds == 0
    assert kernels == compiled_stats._KERNELS and len(kernels) == len(compiled_stats._KERNELS)


def test_compile_none_compiles_once_the_eager_cost_to_come_outweighs_compiling(monkeypatch):
    calls = []
    real = compiled_stats.compile_flat
    monkeypatch.setattr(compiled_stats, "_KERNELS", {})  # a fresh cache: this probe compiles
    monkeypatch.setattr(
        compiled_stats, "compile_flat", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    steps = compiled_stats.EAGER_SAMPLES + 3
    metrics, _, probe = _run(compile=None, steps=steps, expected_steps=10**9)
    assert probe.device_stats.compile is True  # decided after EAGER_SAMPLES timed steps
    assert calls  # and compiled
    eager, _, _ = _run(compile=False, steps=steps)
    _assert_same(eager, metrics)


def test_a_logging_step_that_cannot_compile_warns_once_and_stays_eager(monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(compiled_stats, "_KERNELS", {})
    monkeypatch.setattr(compiled_stats, "compile_flat", fails)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler.*stays eager") as warned:
        metrics, _, probe = _run(compile=True)
    assert len([w for w in warned if "stays eager" in str(w.message)]) == 1
    eager, _, _ = _run(compile=False)
    _assert_same(eager, metrics)


class _HalvedSteps(AMSGrad):
    """A fork that overrides inverse_lr itself (not the rule's denominator)."""

    def inverse_lr(self, param):
        return super().inverse_lr(param) * 2


def test_moments_answers_with_a_subclass_override_of_inverse_lr():
    net = _net()
    opt = _HalvedSteps(net.parameters(), lr=0.05)
    net(torch.randn(4, 6)).sum().backward()
    opt.step()
    params = list(net.parameters())
    invs, _ = moments_of(opt, params)
    plain = AMSGrad._moments(opt, params)[0]
    for inv, base in zip(invs, plain, strict=True):
        torch.testing.assert_close(inv, base * 2, rtol=0, atol=0)


def test_moments_equals_inverse_lr_and_second_moment_one_by_one():
    net = _net()
    opt = AMSGrad(net.parameters(), lr=0.05, bias_correction="max_debiased")
    for _ in range(2):
        net(torch.randn(4, 6)).pow(2).sum().backward()
        opt.step()
    params = list(net.parameters())
    invs, second = opt.moments(params)
    for p, inv, (v, vhat) in zip(params, invs, second, strict=True):
        assert torch.equal(inv, opt.inverse_lr(p))
        v1, vhat1 = opt.second_moment(p)
        assert torch.equal(v, v1) and torch.equal(vhat, vhat1)


def test_compile_must_be_none_true_or_false():
    with pytest.raises(ValueError, match="compile must be"):
        OptimizerDiagnostics(compile="yes")
