"""Fused steps: the whole update of a group as one ``torch.compile``d kernel.

The step is memory-bound: the eager loop reads and writes each state buffer several times
(one pass per op), a fused kernel once. ``torch.compile`` generates that kernel (C++ on CPU,
Triton on CUDA) from the plain per-tensor math below.

Why it does not recompile: every per-step number (lr and schedule, betas, bias corrections,
weight decay factor, bounds, AdaShift's ring-buffer slot) reaches the kernel inside one small
tensor, whose *values* dynamo does not guard on. Only the structure is compiled in: the mode
flags, the device, dtype and the shapes of the tensors. Each such signature gets its own
compiled copy (its own code object, so its own dynamo cache), built once per process and
shared by every optimizer; inductor's FX graph cache (on by default) makes the next process
compile faster.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: seconds spent compiling each signature in this process (first call, tracing included)
COMPILE_SECONDS: dict[tuple, float] = {}
_KERNELS: dict[tuple, Callable[..., None]] = {}


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
    return torch.tensor([values.get(name, 1.0) for name in names], dtype=dtype, device=like.device)


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
        s: Tensor,
    ) -> None:
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


def _reduce(block: str, squared: Tensor) -> Tensor:
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
        grad_queues: list[Tensor],
        s: Tensor,
        slot: Tensor,
    ) -> None:
        # m_t = beta_1 m_{t-1} + (g_t - beta_1^n g_{t-n}) / sum(beta_1^i): the window
        # average without reading the window (round-off shrinks by beta_1 every step)
        for i in range(len(params)):
            param, exp_avg, exp_avg_sq = params[i], exp_avgs[i], exp_avg_sqs[i]
            queue = grad_queues[i]
            p, g = _weight_decay(flags.weight_decay, param, grads[i], s, ix)
            shifted = queue[slot]
            squared = _reduce(flags.block, shifted * shifted)
            v = exp_avg_sq * s[ix["beta2"]] + squared * s[ix["one_minus_beta2"]]
            m = exp_avg * s[ix["beta1"]] + (g * s[ix["window_new"]] - shifted * s[ix["window_old"]])
            denom = v.sqrt()
            if flags.v_divisor:
                denom = denom / s[ix["v_divisor_sqrt"]]
            p = p - s[ix["step_size"]] * (m / (denom + s[ix["eps"]]))
            if flags.bounded:
                p = torch.clamp(p, s[ix["low"]], s[ix["high"]])
            queue[slot] = g
            param.copy_(p)
            exp_avg.copy_(m)
            exp_avg_sq.copy_(v)

    return adashift_step


_FACTORIES = {EMAFlags: _ema_kernel, AdaShiftFlags: _adashift_kernel}


def kernel(flags: EMAFlags | AdaShiftFlags, params: Sequence[Tensor]) -> Callable[..., None]:
    """The compiled step for these flags and this device, dtype and list of shapes."""
    key = (flags, params[0].device, params[0].dtype, tuple(p.shape for p in params))
    compiled = _KERNELS.get(key)
    if compiled is None:
        compiled = _KERNELS[key] = _Timed(key, _own_code(_FACTORIES[type(flags)](flags), key))
    return compiled


def _own_code(fn: Callable, key: tuple) -> Callable:
    """A copy of ``fn`` with its own code object: dynamo caches (and counts recompiles) per
    code object, so one copy per signature never meets the recompile limit."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{len(_KERNELS)}")
    copy = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    return torch.compile(copy, fullgraph=True, dynamic=False)


class _Timed:
    """Times the first call of a compiled kernel (the compile) and logs it."""

    def __init__(self, key: tuple, fn: Callable[..., None]) -> None:
        self.key, self.fn, self.compiled = key, fn, False

    def __call__(self, *args: object) -> float:
        """Runs the step; returns the seconds spent compiling in this call (0 after the first)."""
        if self.compiled:
            self.fn(*args)
            return 0.0
        start = time.perf_counter()
        self.fn(*args)
        seconds = time.perf_counter() - start
        self.compiled = True
        COMPILE_SECONDS[self.key] = seconds
        flags, device, dtype, shapes = self.key
        log.info(
            "compiled fused %s step for %d %s tensors on %s in %.1f s",
            type(flags).__name__.removesuffix("Flags"), len(shapes), dtype, device, seconds,
        )  # fmt: skip
        return seconds
