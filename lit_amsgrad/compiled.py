"""A function of a flat list of tensors, compiled by inductor for one signature of its inputs.

The fused optimizer step (``lit_amsgrad.optim.fused``) and the diagnostics' logging step run
this way: ``make_fx`` traces the function on fake copies of
the inputs (nothing real is touched) into one FX graph and ``torch._inductor.compile`` turns
it into kernels (C++/OpenMP on CPU, Triton on CUDA) without dynamo, so a call evaluates no
guards. The function itself is the one definition: called directly it is the eager path, and
a compiled call computes the same values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

Signature = tuple  # what a compiled function is specialised to: structure, layouts, dtypes


def signature(structure: Any, inputs: Sequence[Tensor]) -> Signature:
    """The cache key of ``inputs``: the caller's structure plus every input's layout."""
    return (
        structure,
        tuple((t.device, t.dtype, t.shape, t.stride()) for t in inputs),
    )


def trace_flat(
    fn: Callable[..., Any], inputs: Sequence[Tensor]
) -> tuple[torch.fx.GraphModule, list[Tensor]]:
    """``fn`` traced on fake copies of ``inputs`` (nothing real is touched) into one FX graph,
    and the fakes. Raises what ``fn`` raises when it cannot be traced (a branch on a tensor
    value, an unsupported op)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    # static shapes under a ShapeEnv: without one inductor bypasses its FX graph cache, and
    # every process would compile from scratch
    fake_mode = FakeTensorMode(shape_env=ShapeEnv())
    fakes = [fake_mode.from_tensor(t, static_shapes=True) for t in inputs]
    with fake_mode:
        return make_fx(fn)(*fakes), fakes


def compile_flat(
    fn: Callable[..., Any], inputs: Sequence[Tensor], options: dict[str, Any] | None = None
) -> tuple[Callable[..., list[Tensor]], float]:
    """``fn(*inputs)`` compiled for exactly these shapes, strides, dtypes and devices, and the
    seconds it took. The compiled function returns ``fn``'s outputs as a flat list."""
    start = time.perf_counter()
    graph, fakes = trace_flat(fn, inputs)
    compiled = torch._inductor.compile(graph, fakes, options=options or {})
    return compiled, time.perf_counter() - start
