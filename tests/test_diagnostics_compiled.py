"""The diagnostics' logging step compiled into one kernel gives what the eager step gives.

``callbacks.stats.device_stats`` is one definition that runs eagerly or compiled
(``callbacks.compiled_stats``); ``compile=None`` compiles only when the run repays it. Every
test here uses the same small network, so the process compiles each signature once.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

import callbacks.compiled_stats as compiled_stats
from callbacks import OptimizerDiagnostics
from callbacks.adapters import moment_view, moments_of, moments_program_of
from callbacks.probe import OptimizerProbe
from lit_amsgrad.optim import Adam, AdamNC, AdaShift, AMSGrad, GenericAdam


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))


def _run(
    compile,
    steps=6,
    expected_steps=None,
    optimizer=lambda ps: AMSGrad(ps, lr=0.05),
    log_every=1,
    small_after=None,
):
    """Metrics and histograms of every logging step of a short fit, with the probe's
    ``compile``; from step ``small_after`` on, the gradients are tiny (v_hat stops growing)."""
    net = _net()
    opt = optimizer(net.parameters())
    names = {id(p): name for name, p in net.named_parameters()}
    metrics, hists = [], []
    probe = OptimizerProbe(
        opt,
        moment_view(opt),
        names,
        on_metrics=lambda m, s: metrics.append((s, m)),
        on_histograms=lambda h, s: hists.append((s, h)),
        log_every_n_steps=log_every,
        histogram_every_n_steps=2,
        count_nonfinite=True,
        compile=compile,
        expected_steps=expected_steps,
    ).attach()
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        (loss * 1e-3 if small_after is not None and step >= small_after else loss).backward()
        opt.step()
    return metrics, hists, probe


#: compiled and eager moments differ in float round-off only: torch's eager CPU sqrt (Sleef)
#: is within 1 ulp, inductor's correctly rounded; the metrics built from them agree to this
ROUND_OFF = 1e-6


def _assert_same(a, b, rel=ROUND_OFF):
    """The same metrics to ``rel``; gamma_min, a difference of two inverse_lr values, to
    ``rel`` of the larger inverse_lr (1 / eff_lr/min)."""
    assert [step for step, _ in a] == [step for step, _ in b]
    for (_, ma), (_, mb) in zip(a, b, strict=True):
        assert ma.keys() == mb.keys()
        for key in ma:
            absolute = 0.0
            if "/gamma_min" in key:  # (no step anywhere, eff_lr/min = 0: compared exactly)
                absolute = rel / (ma[key.replace("gamma_min", "eff_lr/min")] or math.inf)
            assert ma[key] == pytest.approx(mb[key], rel=rel, abs=absolute, nan_ok=True), key


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
            assert edges.tolist() == pytest.approx(hb[key][1].tolist(), rel=ROUND_OFF)


def test_compiled_logging_step_counts_nonfinite_state_as_eager_does():
    """NaN and inf in the state and a parameter: the count and the binning of NaN (bin 0)
    agree."""

    def poisoned(compile):
        metrics, _, probe = _run(compile=compile, steps=2)
        weight = probe.optimizer.param_groups[0]["params"][0]
        probe.optimizer.state[weight]["exp_avg"][0, :2] = float("nan")
        probe.optimizer.state[weight]["max_exp_avg_sq"][1, 0] = float("inf")
        bias = probe.optimizer.param_groups[0]["params"][1]  # another shape: another count
        with torch.no_grad():
            bias[0] = -float("inf")
        with torch.no_grad():  # the logging step again, on the poisoned state
            probe._observe(log=True, hist=False, keep=False)
        return metrics[-1][1]

    eager, compiled = poisoned(False), poisoned(True)
    assert eager["diag/nonfinite"] == compiled["diag/nonfinite"] == 4
    assert eager.keys() == compiled.keys()
    for key, value in eager.items():
        if math.isnan(value):
            assert math.isnan(compiled[key]), key
        else:
            assert compiled[key] == pytest.approx(value, rel=ROUND_OFF, abs=0), key


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
    # the first compiled step has no Gamma: its snapshot was made eagerly (module docstring)
    switch = compiled_stats.EAGER_SAMPLES  # index of step EAGER_SAMPLES + 1
    assert "diag/gamma_neg_frac" in eager[switch][1]
    assert not any("gamma" in key for key in metrics[switch][1])
    without_gamma = {k: v for k, v in eager[switch][1].items() if "gamma" not in k}
    eager[switch] = (eager[switch][0], without_gamma)
    _assert_same(eager, metrics)
    assert all("diag/gamma_neg_frac" in m for _, m in metrics[switch + 1 :])


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


OPTIMIZERS = {
    "amsgrad": lambda ps: AMSGrad(ps, lr=0.05),
    "amsgrad_pytorch": lambda ps: AMSGrad(ps, lr=0.05, bias_correction="pytorch"),
    "amsgrad_max_debiased": lambda ps: AMSGrad(ps, lr=0.05, bias_correction="max_debiased"),
    "adam": lambda ps: Adam(ps, lr=0.05),
    "adamnc": lambda ps: AdamNC(ps, lr=0.05),
    "generic_adam": lambda ps: GenericAdam(ps, lr=0.05),
    "adashift_row": lambda ps: AdaShift(ps, lr=0.05, n=2, block="row"),
    "torch_adam": lambda ps: torch.optim.Adam(ps, lr=0.05, amsgrad=True),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_moments_program_evaluated_as_it_is_gives_moments(name):
    """The program is the rule's own moments with its numbers in a tensor: evaluated without
    compiling, it gives what ``moments`` gives (torch's Adam has no program: None)."""
    net = _net()
    opt = OPTIMIZERS[name](net.parameters())
    for _ in range(3):
        net(torch.randn(4, 6)).pow(2).sum().backward()
        opt.step()
    params = list(net.parameters())
    program = moments_program_of(moment_view(opt), params)
    if name == "torch_adam":
        assert program is None
        return
    invs, second = program.evaluate(program.tensors)
    want_invs, want_second = opt.moments(params)
    # the numbers are float32 in the program, as in the fused step (pytorch mode squares
    # bias_correction2_sqrt in float32): the same to float32 round-off
    same = functools.partial(torch.testing.assert_close, rtol=ROUND_OFF, atol=0)
    for inv, want in zip(invs, want_invs, strict=True):
        same(inv, want)
    for (v, vhat), (want_v, want_vhat) in zip(second, want_second, strict=True):
        same(v, want_v)
        assert (vhat is None) == (want_vhat is None)
        if vhat is not None:
            same(vhat, want_vhat)


@pytest.mark.parametrize(
    ("name", "log_every"),
    [("amsgrad", 3), ("amsgrad_pytorch", 1), ("adam", 1), ("adashift_row", 1), ("torch_adam", 1)],
)
def test_compiled_moments_give_the_eager_metrics(name, log_every):
    """Moments computed inside the kernel (or handed to it, torch's Adam), at every step
    and with a snapshot step between logging steps (3): the eager metrics to round-off. (A
    kernel per optimizer costs seconds to compile: the rest share these code paths.)"""
    eager, _, _ = _run(False, steps=7, optimizer=OPTIMIZERS[name], log_every=log_every)
    compiled, _, probe = _run(True, steps=7, optimizer=OPTIMIZERS[name], log_every=log_every)
    assert not probe.device_stats._failed
    assert any("diag/gamma_neg_frac" in m for _, m in compiled)
    _assert_same(eager, compiled)


def test_gamma_snapshots_come_from_the_path_of_the_logging_step():
    """AMSGrad with constant lr: where v_hat did not grow, Gamma_t is exactly 0, in both
    paths. A snapshot made eagerly and a logging step made compiled would differ there by
    round-off, and count it as negative Gamma."""

    def fit(compile):
        return _run(compile, steps=12, log_every=3, small_after=1)[0]

    eager, compiled = fit(False), fit(True)
    assert [m["diag/gamma_neg_frac"] for _, m in eager if "diag/gamma_neg_frac" in m] == [
        m["diag/gamma_neg_frac"] for _, m in compiled if "diag/gamma_neg_frac" in m
    ]
    assert all(m["diag/gamma_neg_frac"] == 0 for _, m in eager[1:])  # v_hat froze: Gamma = 0


class _ISA:
    def __init__(self, bits: int) -> None:
        self.bits = bits

    def bit_width(self) -> int:
        return self.bits

    def __bool__(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("picked", "valid", "env", "simdlen"),
    [
        (512, [512, 256], None, 256),  # AVX-512: compiled for AVX2
        (256, [256], None, None),  # AVX2 only: inductor's choice
        (128, [128], None, None),  # NEON
        (512, [512], None, None),  # no 256-bit ISA to fall back to
        (512, [512, 256], "avx512", None),  # the user chose
    ],
)
def test_logging_step_kernel_is_compiled_for_avx2_where_inductor_would_pick_avx512(
    monkeypatch, picked, valid, env, simdlen
):
    from torch._inductor import cpu_vec_isa

    monkeypatch.setattr(cpu_vec_isa, "pick_vec_isa", lambda: _ISA(picked))
    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", lambda: [_ISA(b) for b in valid])
    if env is None:
        monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    else:
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", env)
    options = compiled_stats.inductor_options()
    assert options.get("cpp.simdlen") == simdlen
    assert {k: v for k, v in options.items() if k != "cpp.simdlen"} == (
        compiled_stats.INDUCTOR_OPTIONS
    )


def test_logging_step_kernel_keeps_a_vector_width_the_user_set(monkeypatch):
    from torch._inductor import config, cpu_vec_isa

    monkeypatch.setattr(cpu_vec_isa, "pick_vec_isa", lambda: _ISA(512))
    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", lambda: [_ISA(512), _ISA(256)])
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    with config.patch({"cpp.simdlen": 512}):  # monkeypatch's undo would delete the entry
        assert "cpp.simdlen" not in compiled_stats.inductor_options()
    assert config.cpp.simdlen is None


def test_vector_bits_none_leaves_the_width_to_inductor(monkeypatch):
    from torch._inductor import cpu_vec_isa

    monkeypatch.setattr(cpu_vec_isa, "pick_vec_isa", lambda: _ISA(512))
    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", lambda: [_ISA(512), _ISA(256)])
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setattr(compiled_stats, "VECTOR_BITS", None)
    assert compiled_stats.inductor_options() == compiled_stats.INDUCTOR_OPTIONS


def test_logging_step_kernel_compiles_with_inductor_options(monkeypatch):
    seen = []
    real = compiled_stats.compile_flat
    monkeypatch.setattr(compiled_stats, "_KERNELS", {})  # a fresh cache: this probe compiles
    monkeypatch.setattr(compiled_stats, "inductor_options", lambda: {"cpp_wrapper": True})

    def recording(fn, inputs, options=None):
        seen.append(options)
        return real(fn, inputs, options)

    monkeypatch.setattr(compiled_stats, "compile_flat", recording)
    _run(compile=True, steps=2)
    assert seen and all(options == {"cpp_wrapper": True} for options in seen)


@pytest.mark.skipif(
    "cpp.simdlen" not in compiled_stats.inductor_options(),
    reason="the kernel keeps inductor's width on this CPU (no AVX-512, or the user set one): "
    "there is no second width to compare",
)
def test_the_kernel_at_avx2_width_gives_what_inductors_avx512_width_gives(monkeypatch):
    monkeypatch.setattr(compiled_stats, "_KERNELS", {})
    avx2, avx2_hists, _ = _run(compile=True)
    monkeypatch.setattr(compiled_stats, "_KERNELS", {})
    monkeypatch.setattr(compiled_stats, "VECTOR_BITS", None)
    avx512, avx512_hists, _ = _run(compile=True)
    _assert_same(avx2, avx512)
    for (_, ha), (_, hb) in zip(avx2_hists, avx512_hists, strict=True):
        assert {k: c.tolist() for k, (c, _) in ha.items()} == {
            k: c.tolist() for k, (c, _) in hb.items()
        }
