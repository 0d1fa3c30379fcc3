"""The numbers of one step t, and how an update rule reads them in both step paths.

A rule's ``step_scalars(group, t)`` returns a dict: numbers (floats and ints) are the values
that change from step to step (lr and its schedule, betas, bias corrections); everything else
(bools, strings, None) is *structure* that the rule may branch on in Python. The eager step
hands the rule those values as Python floats, exactly as torch's own loop does; the fused step
traces the same rule with each number replaced by an element of one scalars tensor, and
compiles the structure in (it is part of the kernel's cache key). So a rule written once runs
both ways, and a branch on a number (``if s.beta2 > 0.5``) fails at trace time instead of being
frozen into a kernel.
"""

from __future__ import annotations

import array
from collections.abc import Mapping, Sequence
from numbers import Number
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode


def pack(values: Sequence[float], like: Tensor) -> Tensor:
    """The step's numbers as one tensor on ``like``'s device: float64 for float64 tensors,
    else float32 (the opmath of bf16/fp16, and what eager uses for float32)."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    numbers = [float(v) for v in values]
    if like.device.type == "cpu":  # a third of torch.tensor's host time, paid every step
        typecode = "d" if dtype == torch.float64 else "f"
        return torch.frombuffer(array.array(typecode, numbers), dtype=dtype)
    return torch.tensor(numbers, dtype=dtype, device=like.device)


def is_runtime_value(value: Any) -> bool:
    """Numbers change per step and go into the scalars tensor; bools and the rest are structure."""
    return isinstance(value, Number) and not isinstance(value, bool)


class StepScalars(dict):
    """The scalars of step t by name: ``s.beta1`` reads ``s["beta1"]``."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"step scalars have no {name!r} (has: {sorted(self)})") from None

    def split(self) -> tuple[tuple, tuple[str, ...]]:
        """(structure, runtime names) in one pass, as the fused step needs them every step.

        The structure is what a compiled kernel bakes in (the names of the numbers and every
        other value); the runtime names, sorted, say which element of the scalars tensor
        holds which number."""
        structure, names = [], []
        for name in sorted(self):
            value = self[name]
            kind = type(value)
            if kind is float or kind is int or (kind is not bool and is_runtime_value(value)):
                structure.append((name, "<number>"))
                names.append(name)
            else:
                structure.append((name, value))
        return tuple(structure), tuple(names)

    def packed(self, like: Tensor) -> tuple[tuple, Tensor]:
        """(structure, the numbers as one tensor on ``like``'s device) for a fused step."""
        structure, names = self.split()
        return structure, pack([self[name] for name in names], like)

    @classmethod
    def traced(cls, scalars: Mapping[str, Any], values: Tensor) -> StepScalars:
        """The scalars as a rule sees them inside the fused step: each number an element of
        ``values`` (in the order of :meth:`runtime_names`), the structure as it is."""
        out = cls(scalars)
        for i, name in enumerate(out.split()[1]):
            out[name] = values[i]
        return out


#: torch ops whose scalar keyword only takes a Python number, as the tensor math they compute
_SCALAR_KEYWORDS = {
    Tensor.addcmul_: ("value", lambda x, a, b, v: x.add_(a * b * v)),
    Tensor.addcmul: ("value", lambda x, a, b, v: x + a * b * v),
    torch.addcmul: ("value", lambda x, a, b, v: x + a * b * v),
    Tensor.addcdiv_: ("value", lambda x, a, b, v: x.add_(a / b * v)),
    Tensor.addcdiv: ("value", lambda x, a, b, v: x + a / b * v),
    torch.addcdiv: ("value", lambda x, a, b, v: x + a / b * v),
    Tensor.add_: ("alpha", lambda x, a, v: x.add_(a * v)),
    Tensor.add: ("alpha", lambda x, a, v: x + a * v),
    torch.add: ("alpha", lambda x, a, v: x + a * v),
    Tensor.sub_: ("alpha", lambda x, a, v: x.sub_(a * v)),
    Tensor.sub: ("alpha", lambda x, a, v: x - a * v),
    torch.sub: ("alpha", lambda x, a, v: x - a * v),
}


class TensorScalarOps(TorchFunctionMode):
    """While a rule is traced: ``addcmul_(a, b, value=s.x)`` and the like with a tensor ``s.x``
    become the same math on tensors (torch would read the tensor back to the host with
    ``item()``, a device sync per call on an accelerator). The eager step passes floats and
    never enters this mode, so it keeps torch's own ops and their rounding."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rewrite = _SCALAR_KEYWORDS.get(func)
        if rewrite is not None and isinstance(kwargs.get(rewrite[0]), Tensor):
            keyword, math = rewrite
            rest = {k: v for k, v in kwargs.items() if k != keyword}
            if not rest:
                return math(*args, kwargs[keyword])
        return func(*args, **kwargs)
