"""bias_correction="pytorch" equals torch's own Adam / Adam(amsgrad=True) / AdamW."""

import pytest
import torch

from lit_amsgrad.optim import Adam, AMSGrad

SHAPES = [(5, 7), (13,), (2, 3, 4), (), (64, 33)]


def _run_pair(ours_cls, torch_cls, torch_kwargs, *, weight_decay, decoupled, foreach, steps=200):
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen) for s in SHAPES]
    twins = [p.clone() for p in params]
    for p in params + twins:
        p.requires_grad_(True)
    hyper = dict(lr=3e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=weight_decay)
    ours = ours_cls(
        params, bias_correction="pytorch", decoupled_weight_decay=decoupled, foreach=foreach,
        **hyper,
    )  # fmt: skip
    ref = torch_cls(twins, foreach=foreach, **hyper, **torch_kwargs)
    for step in range(steps):
        # large gradients first, then small ones: the max of AMSGrad holds, Adam's v decays
        scale = 10.0 if step < 5 else 0.1
        for p, q in zip(params, twins, strict=True):
            g = torch.randn(p.shape, generator=gen) * scale
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    return params, twins, ours, ref


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize(
    ("ours_cls", "torch_kwargs"),
    [(Adam, {}), (AMSGrad, {"amsgrad": True})],
    ids=["adam", "amsgrad"],
)
def test_equals_torch_adam(ours_cls, torch_kwargs, weight_decay, foreach):
    params, twins, ours, ref = _run_pair(
        ours_cls, torch.optim.Adam, torch_kwargs, weight_decay=weight_decay, decoupled=False,
        foreach=foreach,
    )  # fmt: skip
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(p, q)
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"):
            if key in ref.state[q]:
                torch.testing.assert_close(ours.state[p][key], ref.state[q][key])


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    ("ours_cls", "torch_kwargs"),
    [(Adam, {}), (AMSGrad, {"amsgrad": True})],
    ids=["adam", "amsgrad"],
)
def test_decoupled_equals_torch_adamw(ours_cls, torch_kwargs, foreach):
    params, twins, _, _ = _run_pair(
        ours_cls, torch.optim.AdamW, torch_kwargs, weight_decay=0.1, decoupled=True,
        foreach=foreach,
    )  # fmt: skip
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(p, q)


def test_state_dict_loads_into_torch_adam():
    """State keys are torch's: a state saved here resumes in torch.optim.Adam."""
    params, twins, ours, ref = _run_pair(
        AMSGrad, torch.optim.Adam, {"amsgrad": True}, weight_decay=0.0, decoupled=False,
        foreach=False, steps=20,
    )  # fmt: skip
    fresh = [p.detach().clone().requires_grad_(True) for p in params]
    loaded = torch.optim.Adam(fresh, lr=3e-3, betas=(0.9, 0.99), amsgrad=True)
    loaded.load_state_dict(ours.state_dict())
    for p, q in zip(fresh, twins, strict=True):
        g = torch.ones_like(p)
        p.grad, q.grad = g.clone(), g.clone()
    loaded.step()
    ref.step()
    for p, q in zip(fresh, twins, strict=True):
        torch.testing.assert_close(p, q)
