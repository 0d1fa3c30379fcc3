"""bias_correction="pytorch" equals torch's own Adam / Adam(amsgrad=True) / AdamW bit for bit,
and state dicts move between torch's optimizers and these in both directions."""

import copy

import pytest
import torch

from lit_amsgrad.errors import ConfigError
from lit_amsgrad.optim import Adam, AMSGrad

SHAPES = [(5, 7), (13,), (2, 3, 4), (), (64, 33)]
HYPER = dict(lr=3e-3, betas=(0.9, 0.99), eps=1e-8)
# (ours, torch's class, torch's kwargs)
PAIRS = {
    "adam": (Adam, dict(), torch.optim.Adam, dict()),
    "amsgrad": (AMSGrad, dict(), torch.optim.Adam, dict(amsgrad=True)),
    "adamw": (Adam, dict(decoupled_weight_decay=True), torch.optim.AdamW, dict()),
    "amsgrad-w": (
        AMSGrad,
        dict(decoupled_weight_decay=True),
        torch.optim.AdamW,
        dict(amsgrad=True),
    ),
}


def _twins(seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen).requires_grad_(True) for s in SHAPES]
    return params, [p.detach().clone().requires_grad_(True) for p in params]


def _steps(optimizers, param_lists, gen, steps, start=0):
    for step in range(start, start + steps):
        # large gradients first, then small ones: the max of AMSGrad holds, Adam's v decays
        scale = 10.0 if step < 5 else 0.1
        for tensors in zip(*param_lists, strict=True):
            g = torch.randn(tensors[0].shape, generator=gen) * scale
            for p in tensors:
                p.grad = g.clone()
        for opt in optimizers:
            opt.step()


def _assert_identical(ours, ref, params, twins):
    for p, q in zip(params, twins, strict=True):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"):
            if key in ref.state[q]:
                assert torch.equal(ours.state[p][key], ref.state[q][key]), key


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("pair", PAIRS)
def test_equals_torch_bit_for_bit(pair, weight_decay, maximize):
    ours_cls, ours_kwargs, torch_cls, torch_kwargs = PAIRS[pair]
    params, twins = _twins()
    kw = dict(HYPER, weight_decay=weight_decay, maximize=maximize)
    ours = ours_cls(params, bias_correction="pytorch", **ours_kwargs, **kw)
    ref = torch_cls(twins, foreach=False, **torch_kwargs, **kw)
    _steps([ours, ref], [params, twins], torch.Generator().manual_seed(1), 200)
    _assert_identical(ours, ref, params, twins)


@pytest.mark.parametrize("pair", PAIRS)
def test_close_to_torch_foreach(pair):
    ours_cls, ours_kwargs, torch_cls, torch_kwargs = PAIRS[pair]
    params, twins = _twins()
    ours = ours_cls(params, bias_correction="pytorch", weight_decay=0.05, **ours_kwargs, **HYPER)
    ref = torch_cls(twins, foreach=True, weight_decay=0.05, **torch_kwargs, **HYPER)
    _steps([ours, ref], [params, twins], torch.Generator().manual_seed(1), 100)
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("pair", PAIRS)
def test_state_saved_here_continues_in_torch(pair):
    ours_cls, ours_kwargs, torch_cls, torch_kwargs = PAIRS[pair]
    params, twins = _twins()
    kw = dict(HYPER, weight_decay=0.05)
    ours = ours_cls(params, bias_correction="pytorch", **ours_kwargs, **kw)
    ref = torch_cls(twins, foreach=False, **torch_kwargs, **kw)
    gen = torch.Generator().manual_seed(2)
    _steps([ours, ref], [params, twins], gen, 20)
    fresh = [p.detach().clone().requires_grad_(True) for p in params]
    loaded = torch_cls(fresh, foreach=False, **torch_kwargs, **kw)
    loaded.load_state_dict(copy.deepcopy(ours.state_dict()))
    _steps([loaded, ref], [fresh, twins], gen, 20, start=20)
    _assert_identical(loaded, ref, fresh, twins)


@pytest.mark.parametrize("pair", PAIRS)
def test_state_saved_by_torch_continues_here_bit_for_bit(pair):
    """torch's groups lack bias_correction, lr_schedule, beta1_decay...: those keep this
    instance's values, and the trajectory goes on as torch's own would."""
    ours_cls, ours_kwargs, torch_cls, torch_kwargs = PAIRS[pair]
    params, twins = _twins()
    kw = dict(HYPER, weight_decay=0.05)
    ref = torch_cls(twins, foreach=False, **torch_kwargs, **kw)
    first = torch_cls(params, foreach=False, **torch_kwargs, **kw)
    gen = torch.Generator().manual_seed(3)
    _steps([first, ref], [params, twins], gen, 20)
    ours = ours_cls(params, bias_correction="pytorch", **ours_kwargs, **kw)
    ours.load_state_dict(copy.deepcopy(first.state_dict()))
    assert ours.param_groups[0]["bias_correction"] == "pytorch"
    _steps([ours, ref], [params, twins], gen, 30, start=20)
    _assert_identical(ours, ref, params, twins)


def test_float_steps_of_older_torch_load():
    params, twins = _twins()
    ref = torch.optim.Adam(twins, foreach=False, **HYPER)
    first = torch.optim.Adam(params, foreach=False, **HYPER)
    gen = torch.Generator().manual_seed(4)
    _steps([first, ref], [params, twins], gen, 5)
    saved = copy.deepcopy(first.state_dict())
    for state in saved["state"].values():
        state["step"] = float(state["step"])  # as torch < 1.12 saved it
    ours = Adam(params, bias_correction="pytorch", **HYPER)
    ours.load_state_dict(saved)
    _steps([ours, ref], [params, twins], gen, 5, start=5)
    _assert_identical(ours, ref, params, twins)


@pytest.mark.parametrize(("ours_cls", "amsgrad"), [(Adam, True), (AMSGrad, False)])
def test_state_of_the_other_kind_is_refused(ours_cls, amsgrad):
    params, _ = _twins()
    torch_opt = torch.optim.Adam(params, amsgrad=amsgrad, **HYPER)
    for p in params:
        p.grad = torch.ones_like(p)
    torch_opt.step()
    with pytest.raises(ConfigError, match="amsgrad"):
        ours_cls(params, bias_correction="pytorch", **HYPER).load_state_dict(torch_opt.state_dict())


def test_a_parameter_listed_twice_steps_as_in_torch():
    """torch updates it twice per step, at t and t + 1 (and warns); so do these."""
    p = torch.ones(3, requires_grad=True)
    q = torch.ones(3, requires_grad=True)
    with pytest.warns(UserWarning, match="duplicate"):
        ref = torch.optim.Adam([q, q], foreach=False, **HYPER)
    with pytest.warns(UserWarning, match="duplicate"):
        ours = Adam([p, p], bias_correction="pytorch", **HYPER)
    for _ in range(3):
        p.grad, q.grad = torch.full((3,), 0.5), torch.full((3,), 0.5)
        ours.step()
        ref.step()
    assert torch.equal(p, q)
    assert ours.state[p]["step"].item() == ref.state[q]["step"].item() == 6


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(), "bias_correction"),  # the paper's mode would run another rule on torch's moments
        (dict(bias_correction="pytorch", lr_schedule="inv_sqrt"), "lr_schedule"),
        (dict(bias_correction="pytorch", bounds=(-1.0, 1.0)), "bounds"),
    ],
)
def test_a_torch_state_into_an_optimizer_that_would_run_it_otherwise_is_refused(kwargs, key):
    """Before: keys torch does not save took this instance's values without a word, so
    a torch Adam state loaded into AMSGrad() went on in paper mode."""
    params, _ = _twins()
    torch_opt = torch.optim.Adam(params, amsgrad=True, **HYPER)
    for p in params:
        p.grad = torch.ones_like(p)
    torch_opt.step()
    with pytest.raises(ConfigError, match=rf"the state has no '{key}' .*build it with {key}="):
        AMSGrad(params, **HYPER, **kwargs).load_state_dict(torch_opt.state_dict())
