"""OptimizerDiagnostics' numbers against the paper's formulas, computed by hand on a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from callbacks import OptimizerProbe, TorchAdamAdapter, moment_view
from callbacks.stats import BINS
from lit_amsgrad.optim import Adam, AMSGrad


# ---------------------------------------------------------------- by-hand formulas
def torch_adam_inverse_lr(opt: torch.optim.Adam, p: torch.Tensor, lr: float) -> torch.Tensor:
    """torch's update p -= lr/bc1 * m / (sqrt(v or vmax)/sqrt(bc2) + eps), inverted, in float64."""
    g, s = opt.param_groups[0], opt.state[p]
    (b1, b2), t = g["betas"], float(s["step"])
    v = (s["max_exp_avg_sq"] if g["amsgrad"] else s["exp_avg_sq"]).double()
    return (v.sqrt() / math.sqrt(1 - b2**t) + g["eps"]) * (1 - b1**t) / lr


def torch_adam_moments(opt, p):
    s = opt.state[p]
    vhat = s["max_exp_avg_sq"].double() if opt.param_groups[0]["amsgrad"] else None
    return s["exp_avg_sq"].double(), vhat


def paper_amsgrad_inverse_lr(opt: AMSGrad, p: torch.Tensor, lr: float) -> torch.Tensor:
    """Algorithm 2 with alpha_t = lr / sqrt(t): inverse_lr = (sqrt(vhat_t) + eps) sqrt(t) / lr."""
    s, eps = opt.state[p], opt.param_groups[0]["eps"]
    return (s["max_exp_avg_sq"].double().sqrt() + eps) * math.sqrt(float(s["step"])) / lr


def paper_amsgrad_moments(opt, p):
    s = opt.state[p]
    return s["exp_avg_sq"].double(), s["max_exp_avg_sq"].double()


def expected_metrics(names, invs, prevs, moments, prev_means):
    """docs/design.md's keys from whole tensors; the median is the lower median, the order statistic
    the histogram estimate lands within one bin of."""
    groups = [("", list(range(len(names))))] + [(f"/{n}", [i]) for i, n in enumerate(names)]
    out, means = {}, {}
    for suffix, idx in groups:
        inv = torch.cat([invs[i].flatten() for i in idx])
        eff = 1 / inv
        out[f"diag/eff_lr/min{suffix}"] = eff.min().item()
        out[f"diag/eff_lr/max{suffix}"] = eff.max().item()
        out[f"diag/eff_lr/median{suffix}"] = eff.median().item()
        if prevs is not None:
            gamma = inv - torch.cat([prevs[i].flatten() for i in idx])
            out[f"diag/gamma_neg_frac{suffix}"] = (gamma < 0).double().mean().item()
            out[f"diag/gamma_min{suffix}"] = gamma.min().item()
        if moments[0][1] is not None:
            v = torch.cat([moments[i][0].flatten() for i in idx])
            vhat = torch.cat([moments[i][1].flatten() for i in idx])
            out[f"diag/vhat_active_frac{suffix}"] = (vhat > v).double().mean().item()
            out[f"diag/vhat_max{suffix}"] = vhat.max().item()
            means[suffix] = vhat.mean().item()
            if suffix in prev_means:
                out[f"diag/vhat_growth{suffix}"] = means[suffix] / prev_means[suffix]
    return out, means


def assert_matches(logged: dict, expected: dict, log_bin: float, inv_max: float) -> None:
    assert set(logged) == set(expected)
    for key, want in expected.items():
        got = logged[key]
        if "/median" in key:  # from a 256-bin histogram of log10: exact to one bin
            assert abs(math.log10(got) - math.log10(want)) <= log_bin + 1e-9, key
        elif "gamma_min" in key:  # a difference of float32 inverse_lr values: their round-off
            assert got == pytest.approx(want, abs=4 * 2**-23 * inv_max), key
        else:
            assert got == pytest.approx(want, rel=1e-5, abs=1e-12), key


# ---------------------------------------------------------------- the driver
def grads_stream(model: nn.Module, t: int, gen: torch.Generator) -> None:
    """Random gradients, large for the first steps then small, so Gamma and vhat both move."""
    scale = 10.0 if t <= 3 else 0.01 * (1 + (t % 5))
    for p in model.parameters():
        p.grad = scale * torch.randn(p.shape, generator=gen, dtype=p.dtype)


def run_and_check(make_opt, inverse_lr, moments, steps=24, log_every=3, lr_at=lambda t: 0.05):
    """Drive an optimizer with the probe attached and compare every logged dict by hand."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    names = [n for n, _ in model.named_parameters()]
    opt, sched = make_opt(model.parameters())
    logged = {}
    probe = OptimizerProbe(
        opt,
        moment_view(opt),
        {id(p): n for n, p in model.named_parameters()},
        on_metrics=lambda m, s: logged.setdefault(s, m),
        log_every_n_steps=log_every,
    ).attach()
    gen = torch.Generator().manual_seed(1)
    prev_inv, prev_means, checked = None, {}, 0
    for t in range(1, steps + 1):
        grads_stream(model, t, gen)
        opt.step()
        params = list(model.parameters())
        invs = [inverse_lr(opt, p, lr_at(t)) for p in params]
        if t % log_every == 0:
            mom = [moments(opt, p) for p in params]
            want, prev_means_new = expected_metrics(names, invs, prev_inv, mom, prev_means)
            effs = torch.cat([1 / i.flatten() for i in invs]).log10()
            log_bin = (effs.max() - effs.min()).item() / BINS
            assert_matches(logged[t], want, log_bin, max(i.max().item() for i in invs))
            prev_means, checked = prev_means_new, checked + 1
        prev_inv = invs
        if sched is not None:
            sched.step()
    probe.detach()
    assert sorted(logged) == list(range(log_every, steps + 1, log_every))
    assert checked == steps // log_every
    return logged


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_torch_adam_values_match_hand_formulas(cls, amsgrad):
    logged = run_and_check(
        lambda ps: (cls(ps, lr=0.05, betas=(0.9, 0.99), amsgrad=amsgrad, weight_decay=0.1), None),
        torch_adam_inverse_lr,
        torch_adam_moments,
    )
    assert ("diag/vhat_max" in logged[3]) == amsgrad


def test_lr_schedule_gamma_uses_the_lr_each_step_used():
    """A LambdaLR changes lr between steps; Gamma must compare with the lr step t-1 used."""
    lam = lambda s: 1 / math.sqrt(s + 1)  # noqa: E731

    def make(ps):
        opt = torch.optim.Adam(ps, lr=0.05, amsgrad=True)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lam)

    run_and_check(
        make,
        torch_adam_inverse_lr,
        torch_adam_moments,
        log_every=1,
        lr_at=lambda t: 0.05 * lam(t - 1),
    )


def test_paper_amsgrad_values_match_hand_formulas():
    logged = run_and_check(
        lambda ps: (AMSGrad(ps, lr=0.05, betas=(0.9, 0.99), lr_schedule="inv_sqrt"), None),
        paper_amsgrad_inverse_lr,
        paper_amsgrad_moments,
        lr_at=lambda t: 0.05,
    )
    assert all(m["diag/gamma_neg_frac"] == 0.0 for s, m in logged.items() if s > 3)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_torch_adapter_reproduces_the_update(amsgrad):
    """The last update was exactly -m_t / inverse_lr: the adapter matches torch's own step."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(50))
    opt = torch.optim.Adam([p], lr=0.01, amsgrad=amsgrad)
    adapter = TorchAdamAdapter(opt)
    for t in range(30):
        p.grad = torch.randn(50) * (5.0 if t < 3 else 0.1)
        before = p.detach().clone()
        opt.step()
        step = before - p.detach()
        torch.testing.assert_close(step, opt.state[p]["exp_avg"] / adapter.inverse_lr(p))


def test_snapshot_held_only_across_the_step_before_a_logging_step():
    p = nn.Parameter(torch.zeros(8))
    opt = torch.optim.Adam([p], lr=0.1)
    probe = OptimizerProbe(opt, moment_view(opt), {}, lambda m, s: None, log_every_n_steps=5)
    probe.attach()
    held = []
    for _ in range(10):
        p.grad = torch.randn(8)
        opt.step()
        held.append(probe._prev is not None)
    assert held == [False, False, False, True, False] * 2


# ---------------------------------------------------------------- behaviour
def counterexample_run(opt, x, steps=3030, log_every=1, clamp=False, sched=None):
    """The paper's online problem f_t(x) = 1010x if t mod 101 == 1 else -10x, on [-1, 1]."""
    logged = {}
    probe = OptimizerProbe(
        opt, moment_view(opt), {}, lambda m, s: logged.setdefault(s, m), log_every_n_steps=log_every
    ).attach()
    for t in range(1, steps + 1):
        x.grad = torch.full_like(x, 1010.0 if t % 101 == 1 else -10.0)
        opt.step()
        if clamp:
            with torch.no_grad():
                x.clamp_(-1, 1)
        if sched is not None:
            sched.step()
    probe.detach()
    return logged


@pytest.mark.parametrize("mode", ["none", "max_debiased"])
def test_amsgrad_gamma_never_negative(mode):
    x = nn.Parameter(torch.zeros(3))
    opt = AMSGrad(
        [x], lr=0.5, betas=(0.9, 0.99), lr_schedule="inv_sqrt", bounds=(-1, 1), bias_correction=mode
    )
    logged = counterexample_run(opt, x)
    fracs = [m["diag/gamma_neg_frac"] for m in logged.values() if "diag/gamma_neg_frac" in m]
    assert len(fracs) == len(logged) - 1  # every logging step after the first has Gamma
    assert max(fracs) == 0.0
    # the long-term memory holds the step down between the spikes
    assert np.mean([m["diag/vhat_active_frac"] for m in logged.values()]) > 0.9


def test_adam_gamma_negative_on_the_counterexample():
    x = nn.Parameter(torch.zeros(1))
    opt = Adam([x], lr=0.5, betas=(0.9, 0.99), lr_schedule="inv_sqrt", bounds=(-1, 1))
    logged = counterexample_run(opt, x, log_every=5)
    assert np.mean([m.get("diag/gamma_neg_frac", 0.0) for m in logged.values()]) > 0.5
    assert "diag/vhat_max" not in logged[5]  # Adam keeps no running max


def test_torch_amsgrad_gamma_negative_when_gradients_shrink():
    """torch takes the max over the raw v then debiases: the step grows for a while."""
    x = nn.Parameter(torch.zeros(100))
    opt = torch.optim.Adam([x], lr=0.01, betas=(0.9, 0.999), amsgrad=True)
    logged = {}
    OptimizerProbe(
        opt, moment_view(opt), {}, lambda m, s: logged.setdefault(s, m), log_every_n_steps=10
    ).attach()
    gen = torch.Generator().manual_seed(0)
    for t in range(200):
        x.grad = torch.randn(100, generator=gen) * (10.0 if t < 5 else 0.01)
        opt.step()
    assert max(m["diag/gamma_neg_frac"] for s, m in logged.items() if s >= 50) > 0.5
    assert min(m["diag/gamma_min"] for m in logged.values() if "diag/gamma_min" in m) < 0


def test_vhat_active_after_a_spike():
    x = nn.Parameter(torch.zeros(64))
    opt = AMSGrad([x], lr=0.01, betas=(0.9, 0.99))
    logged = {}
    OptimizerProbe(
        opt, moment_view(opt), {}, lambda m, s: logged.setdefault(s, m), log_every_n_steps=1
    ).attach()
    for t in range(1, 41):
        x.grad = torch.ones(64) * (100.0 if t == 10 else 0.1)
        opt.step()
    assert logged[9]["diag/vhat_active_frac"] == 0.0  # constant gradients: v_t only grows
    assert logged[20]["diag/vhat_active_frac"] == 1.0  # v decays after the spike, vhat holds
    assert logged[11]["diag/vhat_growth"] == pytest.approx(1.0)  # vhat jumped at step 10 only
    assert logged[10]["diag/vhat_growth"] > 100


def test_unsupported_optimizer_has_no_view():
    assert moment_view(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)) is None


@pytest.mark.parametrize("name", ["Adam", "AMSGrad", "AdamNC", "AdaShift", "GenericAdam"])
def test_every_lit_optimizer_is_monitored_through_its_own_answers(name):
    import lit_amsgrad.optim as optim

    torch.manual_seed(0)
    model = nn.Linear(6, 4)
    opt = getattr(optim, name)(model.parameters(), lr=0.01)
    logged = {}
    names = {id(p): n for n, p in model.named_parameters()}
    OptimizerProbe(
        opt, moment_view(opt), names, lambda m, s: logged.setdefault(s, m), log_every_n_steps=1
    ).attach()
    for t in range(1, 31):
        for p in model.parameters():
            p.grad = torch.randn_like(p) * (10.0 if t == 20 else 0.1)
        opt.step()
    inv = torch.cat([opt.inverse_lr(p).flatten() for p in model.parameters()])
    last = logged[30]
    assert last["diag/eff_lr/min"] == pytest.approx(1 / inv.max().item(), rel=1e-6)
    assert last["diag/eff_lr/max"] == pytest.approx(1 / inv.min().item(), rel=1e-6)
    assert last["diag/eff_lr/min"] <= last["diag/eff_lr/median"] <= last["diag/eff_lr/max"]
    has_vhat = opt.second_moment(model.weight)[1] is not None
    assert ("diag/vhat_active_frac/weight" in last) == has_vhat
    assert all(math.isfinite(v) for v in last.values())


def test_histogram_median_is_within_one_bin_above_the_lower_median():
    """medians_from_hist against the definition: the ceil(n/2)-th smallest value lies in
    the bin the median lands in, and an empty row gives the range's start."""
    from callbacks.stats import bin_edges, medians_from_hist

    rng = np.random.default_rng(0)
    lo, hi = -4.0, 1.5
    edges = bin_edges(lo, hi)
    width = (hi - lo) / BINS
    for _ in range(200):
        counts = rng.integers(0, 4, (5, BINS)) * (rng.random((5, BINS)) < rng.random())
        counts[0] = 0
        medians = medians_from_hist(counts.astype(float), lo, hi)
        assert medians[0] == lo
        for row, got in zip(counts[1:], medians[1:], strict=True):
            if row.sum() == 0:
                continue
            values = np.repeat(edges[:-1], row)  # every value at its bin's lower edge
            lower = np.sort(values)[(len(values) + 1) // 2 - 1]
            assert lower - 1e-9 <= got <= lower + width + 1e-9
    # one bin of 4 values: half of them lie below the middle of the bin
    one = np.zeros((1, BINS))
    one[0, 10] = 4
    assert medians_from_hist(one, lo, hi)[0] == pytest.approx(lo + 10.5 * width)


def test_step_reader_overall_row_reduces_rows_that_lack_gamma_or_vhat():
    """Parameters with and without Gamma or vhat in one step: each row gets only its own
    keys, and the overall row reduces just the parameters that have them (a parameter
    without a snapshot must not count as a coordinate with Gamma >= 0)."""
    from callbacks.stats import StepReader

    layout = ((4, True, True), (2, False, False), (3, True, False))  # (numel, Gamma, vhat)
    values = [
        *(0.5, 2.0, 4.0),  # inv_min per parameter
        *(1.0, 8.0, 5.0),  # inv_max
        *(1.0, 3.0),  # gamma_neg, of parameters 0 and 2
        *(-0.25, -0.5),  # gamma_min
        2.0,  # vhat_active, parameter 0 only
        7.0,  # vhat_max
        6.0,  # vhat_sum
        *(-1.0, 1.0),  # lo, hi
        3.0,  # NaN/inf entries
        0.125,  # an extra
    ]
    counts = np.zeros((3, BINS), dtype=np.int64)
    counts[:, 0] = (4, 2, 3)
    # a second logging step read in the same call: the reader keeps the steps apart
    later = list(values)
    later[0], later[7], later[-1] = 0.25, 0.0, 0.5  # inv_min/a, gamma_neg/c, the extra
    later_counts = np.zeros_like(counts)
    later_counts[:, 1] = (4, 2, 3)
    step, second = StepReader(layout, True, ("diag/extra",), "diag", ("", "/a", "/b", "/c"))(
        np.array([values, later]), np.stack([counts.reshape(-1), later_counts.reshape(-1)])
    )
    m = step.metrics
    assert m["diag/eff_lr/min"] == 1 / 8.0 and m["diag/eff_lr/max"] == 1 / 0.5
    assert m["diag/gamma_neg_frac"] == 4.0 / 7 and m["diag/gamma_min"] == -0.5
    assert m["diag/vhat_active_frac"] == 2.0 / 4 and m["diag/vhat_max"] == 7.0
    assert m["diag/gamma_neg_frac/a"] == 1.0 / 4 and m["diag/gamma_neg_frac/c"] == 3.0 / 3
    assert m["diag/eff_lr/min/b"] == 1 / 8.0 and m["diag/eff_lr/max/c"] == 1 / 4.0
    assert not any(key.endswith("/b") for key in m if "gamma" in key or "vhat" in key)
    assert "diag/vhat_max/c" not in m and m["diag/vhat_max/a"] == 7.0
    assert step.means == [6.0 / 4, 6.0 / 4, None, None]
    assert step.extras == {"diag/extra": 0.125, "diag/nonfinite": 3.0}
    assert step.rows(True).tolist() == [counts.sum(axis=0).tolist(), *counts.tolist()]
    m2 = second.metrics
    assert m2["diag/eff_lr/max"] == 1 / 0.25 and m2["diag/eff_lr/max/a"] == 1 / 0.25
    assert m2["diag/gamma_neg_frac"] == 1.0 / 7 and m2["diag/gamma_neg_frac/c"] == 0.0
    assert m2["diag/eff_lr/median"] > m["diag/eff_lr/median"]  # one bin further up
    assert second.extras == {"diag/extra": 0.5, "diag/nonfinite": 3.0}
    assert second.rows(True).tolist() == [later_counts.sum(axis=0).tolist(), *later_counts.tolist()]
