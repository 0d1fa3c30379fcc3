"""Bad arguments fail at construction with a message naming the argument and the range."""

import pytest
import torch

from lit_amsgrad.optim import Adam, AdamNC, AdaShift, AMSGrad, GenericAdam


def _p():
    return [torch.zeros(3, requires_grad=True)]


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (Adam, dict(lr=-1e-3), r"lr must be >= 0, got -0.001"),
        (AMSGrad, dict(lr=float("nan")), r"lr must be >= 0"),
        (AMSGrad, dict(betas=(1.0, 0.999)), r"betas\[0\] must be in \[0, 1\), got 1.0"),
        (AMSGrad, dict(betas=(0.9, -0.1)), r"betas\[1\] must be in \[0, 1\), got -0.1"),
        (Adam, dict(betas=(0.9,)), r"betas must be a pair \(beta_1, beta_2\)"),
        (
            AdamNC,
            dict(betas=(0.9, 0.99)),
            r"betas must be \(beta_1,\) for AdamNC, whose beta_2 follows 1 - 1/t",
        ),
        (Adam, dict(eps=0.0), r"eps must be > 0, got 0.0"),
        (Adam, dict(eps=-1e-8), r"eps must be > 0"),
        (Adam, dict(weight_decay=-0.1), r"weight_decay must be >= 0"),
        (
            AMSGrad,
            dict(bias_correction="adam"),
            r"bias_correction must be one of \['none', 'pytorch', 'max_debiased'\] for AMSGrad, got 'adam'",
        ),
        (
            Adam,
            dict(bias_correction="max_debiased"),
            r"bias_correction must be one of \['none', 'pytorch'\] for Adam",
        ),
        (
            Adam,
            dict(lr_schedule="cosine"),
            r"lr_schedule must be one of \['constant', 'inv_sqrt'\], got 'cosine'",
        ),
        (AMSGrad, dict(bounds=(1.0, -1.0)), r"bounds must be a pair \(low, high\) with low < high"),
        (AMSGrad, dict(bounds=(0.5, 0.5)), r"bounds must be a pair \(low, high\) with low < high"),
        (AMSGrad, dict(bounds=(0.5,)), r"bounds must be None or a pair"),
        (AMSGrad, dict(beta1_decay=0.0), r"beta1_decay must be in \(0, 1\]"),
        (AdaShift, dict(n=0), r"n must be an integer >= 1, got 0"),
        (AdaShift, dict(block="column"), r"block must be one of \['tensor', 'row', 'element'\]"),
        (GenericAdam, dict(theta=1.5), r"theta must be in \(0, 1\]"),
        (GenericAdam, dict(r=0.0), r"r must be > 0"),
        (Adam, dict(lr="fast"), r"lr must be a number >= 0, got 'fast'"),
    ],
)
def test_bad_argument_is_named(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(_p(), **kwargs)


def test_bad_value_in_a_param_group_is_named():
    with pytest.raises(ValueError, match=r"lr must be >= 0"):
        AMSGrad([{"params": _p()}, {"params": _p(), "lr": -1.0}])


def test_generic_adam_warns_outside_its_convergence_region():
    with pytest.warns(UserWarning, match=r"0 < r <= 2s < 2"):
        GenericAdam(_p(), r=1.5, s=0.5)


@pytest.mark.parametrize("cls", [Adam, AMSGrad, AdaShift])
def test_sparse_gradients_are_refused(cls):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = cls(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()
