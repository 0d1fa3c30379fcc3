"""Fused steps: the whole update of a group as one compiled kernel.

The step is memory-bound: the eager loop reads and writes each state buffer several times
(one pass per op), a fused kernel once. Inductor generates that kernel (C++/OpenMP on CPU,
Triton on CUDA) from the plain per-tensor math below.

How it is compiled: ``make_fx`` traces the math on fake tensors into one FX graph (the
in-place writes to parameters and state included) and ``torch._inductor.compile`` turns the
graph into a kernel, without dynamo. A call therefore evaluates no guards: what remains of
the per-step overhead is inductor's size and stride check of its inputs, which is why a
fused step here costs less host time than ``torch.optim.Adam(fused=True)``'s Python. The
step counters are incremented inside the kernel on CPU (torch's own fused Adam pays a
``_foreach_add_`` over CPU scalars, about 1.5 us a tensor, for that).

Why it does not recompile: every per-step number (lr and schedule, betas, bias corrections,
weight decay factor, bounds) reaches the kernel inside one small tensor, whose *values* the
compiled code reads at run time; AdaShift's ring-buffer slot arrives as views of that slot,
which have the same layout whichever slot it is. Only the structure is compiled
in: the mode flags, the device, dtype, shapes and strides of the tensors. Each signature is
compiled once per process and shared by every optimizer; inductor's FX graph cache (on by
default) makes the next process compile faster.
"""

from __future__ import annotations

import array
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv

log = logging.getLogger(__name__)

#: seconds spent tracing and compiling each signature in this process
COMPILE_SECONDS: dict[tuple, float] = {}
#: compiled kernels by full signature (flags, device, dtype, layout of every input)
_KERNELS: dict[tuple, Callable[..., None]] = {}
#: the kernel last used for a list of parameters: a step finds its kernel without reading
#: every input's layout (the kernel checks the layouts itself, see :func:`run`)
_BY_PARAMS: dict[tuple, Callable[..., None]] = {}


@dataclass(frozen=True)
class EMAFlags:
    """What is compiled into an EMA-family kernel; everything else is a runtime scalar."""

    amsgrad: bool
    v_divisor: bool  # the "pytorch" mode: sqrt(v) / sqrt(1 - beta_2^t)
    max_divisor: bool  # the "max_debiased" mode: max over v / (1 - beta_2^t)
    weight_decay: str  # "none", "coupled" or "decoupled"
    bounded: bool


@dataclass(frozen=True)
class AdaShiftFlags:
    """What is compiled into an AdaShift kernel."""

    block: str
    v_divisor: bool
    weight_decay: str
    bounded: bool


#: names of the slots of the scalars tensor, one host-to-kernel transfer per group and step
EMA_SCALARS = (
    "beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "step_size", "eps",
    "v_divisor_sqrt", "max_divisor", "weight_decay", "decay_factor", "low", "high",
)  # fmt: skip
ADASHIFT_SCALARS = (
    "beta1", "window_new", "window_old", "beta2", "one_minus_beta2", "step_size", "eps",
    "v_divisor_sqrt", "weight_decay", "decay_factor", "low", "high",
)  # fmt: skip
_EMA = {name: i for i, name in enumerate(EMA_SCALARS)}
_ADASHIFT = {name: i for i, name in enumerate(ADASHIFT_SCALARS)}


def pack(names: Sequence[str], values: dict[str, float], like: Tensor) -> Tensor:
    """The scalars as one tensor on ``like``'s device: float64 for float64 tensors, else
    float32 (the opmath of bf16/fp16, and what eager uses for float32)."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    numbers = [values.get(name, 1.0) for name in names]
    if like.device.type == "cpu":  # a third of torch.tensor's host time, paid every step
        typecode = "d" if dtype == torch.float64 else "f"
        return torch.frombuffer(array.array(typecode, numbers), dtype=dtype)
    return torch.tensor(numbers, dtype=dtype, device=like.device)


def counts_steps_in_kernel(device: torch.device) -> bool:
    """Whether the kernel increments the step counters itself: on CPU, where they live with
    the parameters. On an accelerator they stay on the host (torch's convention for
    non-capturable optimizers) and are counted outside the kernel."""
    return device.type == "cpu"


def _weight_decay(
    mode: str, p: Tensor, g: Tensor, s: Tensor, ix: dict[str, int]
) -> tuple[Tensor, Tensor]:
    if mode == "coupled":
        return p, g + s[ix["weight_decay"]] * p
    if mode == "decoupled":
        return p * s[ix["decay_factor"]], g
    return p, g


def _ema_kernel(flags: EMAFlags) -> Callable[..., None]:
    ix = _EMA

    def ema_step(
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        max_exp_avg_sqs: list[Tensor],
        steps: list[Tensor],
        s: Tensor,
    ) -> None:
        for step in steps:
            step.add_(1)
        for i in range(len(params)):
            param, exp_avg, exp_avg_sq = params[i], exp_avgs[i], exp_avg_sqs[i]
            p, g = _weight_decay(flags.weight_decay, param, grads[i], s, ix)
            m = exp_avg + s[ix["one_minus_beta1"]] * (g - exp_avg)
            v = exp_avg_sq * s[ix["beta2"]] + g * g * s[ix["one_minus_beta2"]]
            used = v
            if flags.amsgrad:
                candidate = v / s[ix["max_divisor"]] if flags.max_divisor else v
                used = torch.maximum(max_exp_avg_sqs[i], candidate)
                max_exp_avg_sqs[i].copy_(used)
            denom = used.sqrt()
            if flags.v_divisor:
                denom = denom / s[ix["v_divisor_sqrt"]]
            p = p - s[ix["step_size"]] * (m / (denom + s[ix["eps"]]))
            if flags.bounded:
                p = torch.clamp(p, s[ix["low"]], s[ix["high"]])
            param.copy_(p)
            exp_avg.copy_(m)
            exp_avg_sq.copy_(v)

    return ema_step


def reduce_block(block: str, squared: Tensor) -> Tensor:
    """AdaShift's spatial operation phi: the max of ``squared`` per block, kept broadcastable
    to the parameter (one value per tensor, per slice along the first dimension, or none)."""
    if block == "element" or squared.dim() == 0:
        return squared
    if block == "tensor":
        return squared.amax()
    return squared.amax(dim=tuple(range(1, squared.dim())), keepdim=True)


def _adashift_kernel(flags: AdaShiftFlags) -> Callable[..., None]:
    ix = _ADASHIFT

    def adashift_step(
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        shifted_grads: list[Tensor],
        shifted_sq_maxes: list[Tensor],
        steps: list[Tensor],
        s: Tensor,
    ) -> None:
        # shifted_grads[i] is the window slot of g_{t-n} (a view), which g_t replaces;
        # shifted_sq_maxes[i] (empty for element blocks) the slot of its stored phi(g_{t-n}^2),
        # which phi(g_t^2) replaces. m_t = beta_1 m_{t-1} + (g_t - beta_1^n g_{t-n}) /
        # sum(beta_1^i): the window average without reading the window (round-off shrinks by
        # beta_1 every step).
        for step in steps:
            step.add_(1)
        for i in range(len(params)):
            param, exp_avg, exp_avg_sq = params[i], exp_avgs[i], exp_avg_sqs[i]
            shifted = shifted_grads[i]
            p, g = _weight_decay(flags.weight_decay, param, grads[i], s, ix)
            squared = shifted_sq_maxes[i] if shifted_sq_maxes else shifted * shifted
            v = exp_avg_sq * s[ix["beta2"]] + squared * s[ix["one_minus_beta2"]]
            m = exp_avg * s[ix["beta1"]] + (g * s[ix["window_new"]] - shifted * s[ix["window_old"]])
            denom = v.sqrt()
            if flags.v_divisor:
                denom = denom / s[ix["v_divisor_sqrt"]]
            p = p - s[ix["step_size"]] * (m / (denom + s[ix["eps"]]))
            if flags.bounded:
                p = torch.clamp(p, s[ix["low"]], s[ix["high"]])
            if shifted_sq_maxes:
                shifted_sq_maxes[i].copy_(reduce_block(flags.block, g * g))
            shifted.copy_(g)
            param.copy_(p)
            exp_avg.copy_(m)
            exp_avg_sq.copy_(v)

    return adashift_step


_FACTORIES = {EMAFlags: _ema_kernel, AdaShiftFlags: _adashift_kernel}


def run(flags: EMAFlags | AdaShiftFlags, lists: Sequence[list[Tensor]], *extras: Tensor) -> float:
    """Runs the compiled step for these flags on ``lists`` (params first) and ``extras``;
    compiles it first if this signature is new. Returns the seconds spent compiling.

    The kernel is found by the identity of the parameters, without reading the layout of
    every input each step. The compiled code checks sizes and strides on entry, before it
    writes anything: if a layout changed since (a gradient with other strides, a parameter
    whose ``.data`` was replaced), that check raises and the step looks the kernel up again
    by the full signature.
    """
    params = lists[0]
    inputs = [t for tensors in lists for t in tensors]
    inputs.extend(extras)
    fast_key = (flags, params[0].device, params[0].dtype, *map(id, params))
    compiled = _BY_PARAMS.get(fast_key)
    if compiled is not None:
        try:
            compiled(*inputs)
            return 0.0
        except AssertionError:
            log.debug("fused step: input layouts changed, looking the kernel up again")
    key = (flags, params[0].device, params[0].dtype, tuple(len(t) for t in lists),
           tuple((t.shape, t.stride()) for t in inputs))  # fmt: skip
    seconds = 0.0
    compiled = _KERNELS.get(key)
    if compiled is None:
        start = time.perf_counter()
        compiled = _KERNELS[key] = _compile(_FACTORIES[type(flags)](flags), lists, extras)
        seconds = COMPILE_SECONDS[key] = time.perf_counter() - start
        log.info(
            "compiled fused %s step for %d %s tensors on %s in %.1f s",
            type(flags).__name__.removesuffix("Flags"), len(params), params[0].dtype,
            params[0].device, seconds,
        )  # fmt: skip
    _BY_PARAMS[fast_key] = compiled
    compiled(*inputs)
    return seconds


def _compile(
    body: Callable[..., None], lists: Sequence[list[Tensor]], extras: Sequence[Tensor]
) -> Callable[..., None]:
    """``body`` traced on fake copies of the inputs (nothing real is touched) and compiled
    by inductor. The traced graph takes the inputs flat, lists first, in order."""
    lengths = [len(tensors) for tensors in lists]

    def flat_body(*inputs: Tensor) -> None:
        it = iter(inputs)
        body(*[[next(it) for _ in range(n)] for n in lengths], *it)

    # fake copies with static shapes under a ShapeEnv: without a ShapeEnv inductor bypasses
    # its FX graph cache, and every process would compile from scratch
    fake_mode = FakeTensorMode(shape_env=ShapeEnv())
    inputs = [t for tensors in lists for t in tensors] + list(extras)
    fakes = [fake_mode.from_tensor(t, static_shapes=True) for t in inputs]
    with fake_mode:
        graph = make_fx(flat_body)(*fakes)
    return torch._inductor.compile(graph, fakes, options=inductor_options())


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
