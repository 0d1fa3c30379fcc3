"""Behaviour of the whole family: Gamma_t, inverse_lr, state round trip, AdaShift."""

import copy

import pytest
import torch

from lit_amsgrad.optim import Adam, AdamNC, AdaShift, AMSGrad, GenericAdam

# (class, kwargs) for every optimizer and mode
FAMILY = [
    (Adam, dict(bias_correction="none")),
    (Adam, dict(bias_correction="pytorch")),
    (AMSGrad, dict(bias_correction="none")),
    (AMSGrad, dict(bias_correction="pytorch")),
    (AMSGrad, dict(bias_correction="max_debiased")),
    (AMSGrad, dict(bias_correction="none", lr_schedule="inv_sqrt", beta1_decay=0.999)),
    (AdamNC, dict(betas=(0.9,), lr_schedule="inv_sqrt")),
    (AdamNC, dict(betas=(0.9,), bias_correction="pytorch")),
    (GenericAdam, dict(betas=(0.9,), theta=1.0, r=0.5, s=0.5)),
    (AdaShift, dict(n=3, block="tensor")),
    (AdaShift, dict(n=3, block="row", bias_correction="pytorch")),
    (AdaShift, dict(n=3, block="element")),
]
IDS = [f"{c.__name__}-{'-'.join(str(v) for v in kw.values())}" for c, kw in FAMILY]


def _params(seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (5,), ()]
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_(True) for s in shapes]


def _grads(params, gen, scale=1.0):
    return [torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale for p in params]


def _step(opt, params, grads):
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt.step()


@pytest.mark.parametrize(("cls", "kwargs"), FAMILY, ids=IDS)
def test_last_update_is_minus_m_over_inverse_lr(cls, kwargs):
    params = _params(dtype=torch.float64)  # the difference x_t - x_{t-1} needs the digits
    opt = cls(params, lr=1e-2, **kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        before = [p.detach().clone() for p in params]
        _step(opt, params, _grads(params, gen))
        for p, b in zip(params, before, strict=True):
            inv = opt.inverse_lr(p)
            assert inv.shape == p.shape
            expected = -opt.state[p]["exp_avg"] / inv
            torch.testing.assert_close(p.detach() - b, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("cls", "kwargs"), FAMILY, ids=IDS)
def test_state_dict_round_trip_continues_identically(cls, kwargs):
    params = _params()
    opt = cls(params, lr=1e-2, **kwargs)
    gen = torch.Generator().manual_seed(3)
    for _ in range(7):
        _step(opt, params, _grads(params, gen))
    saved = copy.deepcopy(opt.state_dict())
    twins = [p.detach().clone().requires_grad_(True) for p in params]
    resumed = cls(twins, lr=1e-2, **kwargs)
    resumed.load_state_dict(saved)
    for _ in range(7):
        grads = _grads(params, gen)
        _step(opt, params, grads)
        _step(resumed, twins, grads)
    for p, q in zip(params, twins, strict=True):
        assert torch.equal(p, q)
        for key, value in opt.state[p].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, resumed.state[q][key]), key


def _shrinking_stream(step, shape, gen):
    """Random gradients whose scale jumps around and then shrinks: v_t decreases often."""
    scale = 10.0 if step < 5 else (0.01 if step % 7 else 3.0)
    return torch.randn(shape, generator=gen) * scale


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (AMSGrad, dict(bias_correction="none")),
        (AMSGrad, dict(bias_correction="none", lr_schedule="inv_sqrt")),
        (AMSGrad, dict(bias_correction="max_debiased")),
        (AMSGrad, dict(bias_correction="max_debiased", lr_schedule="inv_sqrt")),
        (AdamNC, dict(betas=(0.9,), lr_schedule="inv_sqrt")),
        (AdamNC, dict(betas=(0.9,), lr_schedule="inv_sqrt", beta1_decay=0.99)),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gamma_is_never_negative(cls, kwargs, seed):
    """Gamma_t = inverse_lr_t - inverse_lr_{t-1} >= 0 element-wise at every step."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.zeros(200, requires_grad=True)
    opt = cls([p], lr=1e-3, **kwargs)
    previous = None
    for step in range(300):
        p.grad = _shrinking_stream(step, p.shape, gen)
        opt.step()
        current = opt.inverse_lr(p).clone()
        if previous is not None:
            gamma = current - previous
            assert (gamma >= -1e-6 * previous).all(), f"Gamma < 0 at step {step + 1}"
        previous = current


def test_torch_style_amsgrad_lets_the_step_grow():
    """The contrast to the test above: the "pytorch" mode's Gamma_t does go negative."""
    gen = torch.Generator().manual_seed(0)
    p = torch.zeros(200, requires_grad=True)
    opt = AMSGrad([p], lr=1e-3, bias_correction="pytorch")
    previous, negative = None, 0
    for step in range(300):
        p.grad = _shrinking_stream(step, p.shape, gen)
        opt.step()
        current = opt.inverse_lr(p).clone()
        if previous is not None:
            negative += int((current < previous).sum())
        previous = current
    assert negative > 0


def test_adam_gamma_goes_negative_on_the_counterexample():
    x = torch.zeros(1, requires_grad=True)
    opt = Adam([x], lr=0.5, betas=(0.9, 0.99), lr_schedule="inv_sqrt", bounds=(-1, 1))
    previous, negative_steps = None, 0
    for t in range(1, 1001):
        x.grad = torch.tensor([1010.0 if t % 101 == 1 else -10.0])
        opt.step()
        current = opt.inverse_lr(x).clone()
        if previous is not None and (current < previous).any():
            negative_steps += 1
        previous = current
    assert negative_steps > 500  # between the spikes, v decays and the step grows


@pytest.mark.parametrize(("cls", "kwargs"), FAMILY, ids=IDS)
def test_bounds_keep_every_coordinate_in_the_box(cls, kwargs):
    gen = torch.Generator().manual_seed(4)
    p = (torch.rand(50, generator=gen) - 0.5).requires_grad_(True)
    opt = cls([p], lr=1.0, bounds=(-0.5, 0.25), **kwargs)
    for _ in range(40):
        p.grad = torch.randn(50, generator=gen) * 100
        opt.step()
        assert p.min() >= -0.5 and p.max() <= 0.25


def test_adashift_is_zhou_et_al_algorithm():
    """AdaShift written plainly: window of n gradients, v fed g_{t-n} reduced by max."""
    n, beta1, beta2, lr, eps = 3, 0.9, 0.99, 0.01, 1e-10
    gen = torch.Generator().manual_seed(5)
    grads = [torch.randn(4, 2, generator=gen, dtype=torch.float64) for _ in range(20)]
    p = torch.zeros(4, 2, dtype=torch.float64, requires_grad=True)
    opt = AdaShift([p], lr=lr, betas=(beta1, beta2), eps=eps, n=n, block="row")
    x = torch.zeros(4, 2, dtype=torch.float64)
    v = torch.zeros(4, 1, dtype=torch.float64)
    weights = [beta1**i for i in range(n)]
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        if t > n:
            m = sum(w * grads[t - 1 - i] for i, w in enumerate(weights)) / sum(weights)
            shifted = grads[t - 1 - n]
            v = beta2 * v + (1 - beta2) * (shifted**2).amax(dim=1, keepdim=True)
            x = x - lr * m / (v.sqrt() + eps)
        torch.testing.assert_close(p.detach(), x, rtol=1e-12, atol=1e-12)


def test_adashift_warm_up_takes_no_step():
    """The first n steps only fill the window: no update, an infinite inverse_lr."""
    p = torch.ones(3, requires_grad=True)
    opt = AdaShift([p], lr=0.1, n=4)
    for _ in range(4):
        p.grad = torch.ones(3)
        opt.step()
        assert torch.equal(p.detach(), torch.ones(3))
        assert torch.isinf(opt.inverse_lr(p)).all()
    p.grad = torch.ones(3)
    opt.step()
    assert (p.detach() < 1).all()


def test_amsgrad_vhat_active_after_spike():
    p = torch.zeros(10, requires_grad=True)
    opt = AMSGrad([p], lr=1e-3)
    p.grad = torch.full((10,), 100.0)
    opt.step()
    for _ in range(50):
        p.grad = torch.full((10,), 0.01)
        opt.step()
    v, v_hat = opt.second_moment(p)
    assert (v_hat > v).all()
    adam = Adam([p], lr=1e-3)
    p.grad = torch.ones(10)
    adam.step()
    assert adam.second_moment(p)[1] is None
