"""Fused steps: an optimizer's own update rule over all of a group's tensors, compiled.

The step is memory-bound: the eager loop reads and writes each state buffer several times
(one pass per op), a fused kernel once. There is no second copy of the math here: the kernel
is the optimizer's ``tensor_step`` (the same method the eager loop calls, see
``core.AdaptiveOptimizer``) traced over every tensor of the group, with the step's numbers
read from one small scalars tensor (``scalars.StepScalars``).

How it is compiled: ``make_fx`` traces that loop on fake tensors into one FX graph (the
in-place writes to parameters and state included) and ``torch._inductor.compile`` turns the
graph into a kernel (C++/OpenMP on CPU, Triton on CUDA), without dynamo. A call therefore
evaluates no guards: what remains of the per-step overhead is inductor's size and stride
check of its inputs. The step counters are incremented inside the kernel on CPU.

Why it does not recompile: every number of the step reaches the kernel inside the scalars
tensor, whose *values* the compiled code reads at run time. Only the structure is compiled in
(the optimizer class, the structural entries of its step scalars, the names of each tensor's
state, device, dtype, shapes and strides). Each signature is compiled once per process and
shared by every optimizer of that class; inductor's FX graph cache (on by default) makes the
next process compile faster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..compiled import trace_flat
from .scalars import TensorScalarOps

log = logging.getLogger(__name__)

#: seconds spent tracing and compiling each signature in this process
COMPILE_SECONDS: dict[tuple, float] = {}
#: compiled kernels by full signature (structure, device, dtype, layout of every input)
_KERNELS: dict[tuple, Callable[..., None]] = {}
#: the kernel last used for a list of parameters: a step finds its kernel without reading
#: every input's layout (the kernel checks the layouts itself, see :func:`run`)
_BY_PARAMS: dict[tuple, Callable[..., None]] = {}

#: body(params, grads, states, steps, scalars): the traced step over lists of tensors
Body = Callable[[list[Tensor], list[Tensor], list[dict[str, Tensor]], list[Tensor], Tensor], None]


def counts_steps_in_kernel(device: torch.device) -> bool:
    """Whether the kernel increments the step counters itself: on CPU, where they live with
    the parameters. On an accelerator they stay on the host (torch's convention for
    non-capturable optimizers) and are counted outside the kernel."""
    return device.type == "cpu"


def trace(
    body: Body,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Tensor]],
    steps: list[Tensor],
    scalars: Tensor,
) -> tuple[torch.fx.GraphModule, list[Tensor]]:
    """``body`` traced on fake copies of the inputs (nothing real is touched), and the fakes:
    the graph takes the inputs flat, in :func:`flatten`'s order. Raises what the body raises when it cannot be
    traced (a branch on a tensor value, an unsupported op)."""
    inputs, unflatten = flatten(params, grads, states, steps, scalars)

    def flat_body(*flat: Tensor) -> None:
        with TensorScalarOps():
            body(*unflatten(flat))

    return trace_flat(flat_body, inputs)


def flatten(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Tensor]],
    steps: list[Tensor],
    scalars: Tensor,
) -> tuple[list[Tensor], Callable[[Sequence[Tensor]], tuple]]:
    """The inputs as one flat list, and the function that rebuilds the arguments from it."""
    names = [tuple(state) for state in states]
    n, n_steps = len(params), len(steps)

    def unflatten(inputs: Sequence[Tensor]) -> tuple:
        it = iter(inputs)
        ps = [next(it) for _ in range(n)]
        gs = [next(it) for _ in range(n)]
        sts = [{key: next(it) for key in keys} for keys in names]
        return ps, gs, sts, [next(it) for _ in range(n_steps)], next(it)

    return flat_inputs(params, grads, states, steps, scalars), unflatten


def flat_inputs(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Tensor]],
    steps: list[Tensor],
    scalars: Tensor,
) -> list[Tensor]:
    """The kernel's inputs in the traced graph's order: what every step builds."""
    flat = [*params, *grads]
    for state in states:
        flat.extend(state.values())
    flat.extend(steps)
    flat.append(scalars)
    return flat


def run(
    structure: tuple,
    make_body: Callable[[], Body],
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Tensor]],
    steps: list[Tensor],
    scalars: Tensor,
) -> float:
    """Runs the compiled step of this structure; compiles it first if this signature is new.
    Returns the seconds spent compiling; ``make_body()`` gives the traced step, called only
    then.

    The kernel is found by the identity of the parameters, without reading the layout of
    every input each step. The compiled code checks sizes and strides on entry, before it
    writes anything: if a layout changed since (a gradient with other strides, a parameter
    whose ``.data`` was replaced), that check raises and the step looks the kernel up again
    by the full signature.
    """
    inputs = flat_inputs(params, grads, states, steps, scalars)
    fast_key = (structure, params[0].device, params[0].dtype, len(steps), *map(id, params))
    compiled = _BY_PARAMS.get(fast_key)
    if compiled is not None:
        try:
            compiled(*inputs)
            return 0.0
        except AssertionError:
            log.debug("fused step: input layouts changed, looking the kernel up again")
    key = (structure, params[0].device, params[0].dtype, len(params), len(steps),
           tuple(tuple(state) for state in states),
           tuple((t.shape, t.stride()) for t in inputs))  # fmt: skip
    seconds = 0.0
    compiled = _KERNELS.get(key)
    if compiled is None:
        start = time.perf_counter()
        graph, fakes = trace(make_body(), params, grads, states, steps, scalars)
        compiled = _KERNELS[key] = compile_graph(graph, fakes)
        seconds = COMPILE_SECONDS[key] = time.perf_counter() - start
        log.info(
            "compiled fused %s step for %d %s tensors on %s in %.1f s",
            structure[0], len(params), params[0].dtype, params[0].device, seconds,
        )  # fmt: skip
    _BY_PARAMS[fast_key] = compiled
    compiled(*inputs)
    return seconds


def compile_graph(graph: torch.fx.GraphModule, fakes: list[Tensor]) -> Callable[..., None]:
    """``graph`` compiled by inductor under :func:`inductor_options`, with the fusion rule
    installed for this compile only. Inductor reads ``inductor_choices_class`` once per
    thread, at that thread's first compile, and keeps the instance: without this, a
    ``torch.compile`` of the model before the first step left the step with inductor's default
    fusion (and the FX graph cache kept that kernel under our rule's key), and a step that
    compiled first left our rule in place for every later compile of the thread."""
    options = inductor_options()
    choices = options.get("inductor_choices_class")
    if choices is None:  # pragma: no cover - older torch
        return torch._inductor.compile(graph, fakes, options=options)
    from torch._inductor.virtualized import V

    with V.set_choices_handler(choices()):
        return torch._inductor.compile(graph, fakes, options=options)


def inductor_options() -> dict[str, Any]:
    """Inductor's options for a fused step. ``size_asserts``: the entry check that
    :func:`run` relies on to notice a changed layout. ``inductor_choices_class``: one loop per
    tensor with its reductions inside (see :mod:`.fusion_choices`; imported here, when a step
    first compiles, because inductor's choices module takes 1-2 s to import); a torch
    without that hook gets the cap ``cpp.max_horizontal_fusion_size=1`` instead."""
    import torch._inductor.config

    options: dict[str, Any] = {"size_asserts": True}
    if hasattr(torch._inductor.config, "inductor_choices_class"):
        from .fusion_choices import OneLoopPerTensor

        options["inductor_choices_class"] = OneLoopPerTensor
    else:  # pragma: no cover - older torch
        options["cpp.max_horizontal_fusion_size"] = 1
    return options
