"""The family behaves like a torch optimizer: unknown keywords raise TypeError, torch's flags
are supported (maximize) or refused with a message that says what to use, deepcopy keeps
every public attribute."""

import copy

import pytest
import torch

from lit_amsgrad.errors import ConfigError
from lit_amsgrad.optim import Adam, AdamNC, AdaShift, AMSGrad, GenericAdam

FAMILY = [
    (Adam, {}),
    (AMSGrad, {}),
    (AdamNC, dict(betas=(0.9,))),
    (GenericAdam, dict(betas=(0.9,))),
    (AdaShift, dict(n=2)),
]
IDS = [cls.__name__ for cls, _ in FAMILY]


def _p():
    return [torch.zeros(3, requires_grad=True)]


@pytest.mark.parametrize(("cls", "kwargs"), FAMILY, ids=IDS)
def test_unknown_keyword_is_a_type_error_naming_it(cls, kwargs):
    with pytest.raises(
        TypeError, match=f"{cls.__name__} got unexpected keyword argument.*'not_an_option'"
    ):
        cls(_p(), not_an_option=1, **kwargs)


def test_a_misspelt_keyword_gets_a_suggestion():
    with pytest.raises(TypeError, match=r"'bias_corection' \(did you mean 'bias_correction'\?\)"):
        AMSGrad(_p(), bias_corection="pytorch")


def test_amsgrad_on_adam_points_to_amsgrad():
    with pytest.raises(
        ConfigError, match=r"amsgrad=True is not an option of Adam: use lit_amsgrad.optim.AMSGrad"
    ):
        Adam(_p(), amsgrad=True)
    with pytest.raises(ConfigError, match=r"use lit_amsgrad.optim.Adam"):
        AMSGrad(_p(), amsgrad=False)
    # torch's flag where it says what the class does is accepted
    assert Adam(_p(), amsgrad=False).defaults["amsgrad"] is False
    assert AMSGrad(_p(), amsgrad=True).defaults["amsgrad"] is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(capturable=True), r"capturable must be False \(CUDA-graph capture is not supported; fused=True"),
        (dict(differentiable=True), r"differentiable must be False \(the step runs under no_grad; .*torch.func\)"),
        (dict(foreach=True), r"foreach must be None or False .*fused=True is the multi-tensor step"),
        (dict(lr=torch.tensor(0.01)), r"lr must be a number >= 0 \(a Python number: tensor hyperparameters are not supported\)"),
        (dict(maximize="yes"), r"maximize must be True or False"),
    ],
)  # fmt: skip
def test_torch_flags_that_are_not_supported_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AMSGrad(_p(), **kwargs)


def test_complex_parameters_are_refused_at_construction():
    with pytest.raises(ConfigError, match=r"real parameters only.*view_as_real"):
        Adam([torch.zeros(3, dtype=torch.complex64, requires_grad=True)])


@pytest.mark.parametrize(("cls", "kwargs"), FAMILY, ids=IDS)
@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_maximize_climbs(cls, kwargs, fused):
    """maximize=True steps along +g: exactly the mirror image of minimising -f."""
    runs = []
    for maximize in (False, True):
        x = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
        opt = cls([x], lr=0.1, maximize=maximize, fused=fused, **kwargs)
        for _ in range(6):
            opt.zero_grad()
            value = (x - 3.0).square().sum()
            (value if maximize else -value).backward()  # maximise f or minimise -f: same path
            opt.step()
        runs.append(x.detach())
    assert torch.equal(runs[0], runs[1])
    assert (runs[1] - torch.tensor([1.0, -2.0, 0.5])).abs().sum() > 0


@pytest.mark.parametrize(("cls", "kwargs"), FAMILY, ids=IDS)
def test_deepcopy_keeps_every_public_attribute(cls, kwargs):
    params = _p()
    opt = cls(params, lr=0.01, **kwargs)
    params[0].grad = torch.ones(3)
    opt.step()
    opt.compile_seconds = 1.5
    twin = copy.deepcopy(opt)
    public = {k for k in vars(opt) if not k.startswith("_")}
    assert public == {k for k in vars(twin) if not k.startswith("_")}
    assert twin.compile_seconds == 1.5
    for key in public:
        if key not in ("state", "param_groups"):
            assert getattr(twin, key) == getattr(opt, key), key
