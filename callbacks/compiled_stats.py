"""The diagnostics' device side, eager or compiled into one kernel: whichever pays.

``stats.device_stats`` is the one definition of what a logging step computes. Eager, it is ~30
small ops per parameter: 1-2 ms on the MNIST networks, as long as their whole training step.
Compiled (``lit_amsgrad.compiled``: make_fx + inductor, no dynamo), the same function is one
kernel that reads each tensor about once. Compiling costs seconds (2-10 s on a 2-core CPU,
less from inductor's cache), so ``compile=None`` (the default) compiles only when the run is
long enough to pay it back: after a few eager logging steps have been timed, when their cost
times the logging steps still to come exceeds ``COMPILE_WHEN_SAVING_S``. Short runs (smoke
tests, the test suite) stay eager; a long MNIST run at every step compiles. ``compile=True``
compiles at the first logging step, ``False`` never. A compilation that fails warns once and
stays eager: same values, only slower.
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from collections.abc import Callable

from torch import Tensor

from callbacks.stats import device_stats
from lit_amsgrad.compiled import Signature, compile_flat, signature

log = logging.getLogger(__name__)

#: compile once the eager logging steps still to come would cost this many seconds
COMPILE_WHEN_SAVING_S = 20.0
#: eager logging steps timed before deciding (the first one allocates, so the median)
EAGER_SAMPLES = 3
#: inductor's options: the wrapper in C++ (a Python wrapper cost as much as the kernel on the
#: MNIST networks) and no size asserts (the signature already holds every input's layout)
INDUCTOR_OPTIONS = {"cpp_wrapper": True, "size_asserts": False}
#: compiled logging steps by signature, shared by every probe of the process
_KERNELS: dict[Signature, Callable[..., list[Tensor]]] = {}

Moments = list[tuple[Tensor, Tensor | None]]


class DeviceStats:
    """Runs ``device_stats`` eagerly or compiled; see the module docstring for when."""

    def __init__(self, compile: bool | None = None) -> None:
        if compile not in (None, True, False):
            raise ValueError(f"compile must be None (when it pays), True or False, got {compile!r}")
        self.compile = compile
        self.compile_seconds = 0.0
        self._eager_seconds: list[float] = []
        self._failed = False

    def __call__(
        self,
        invs: list[Tensor],
        prevs: list[Tensor | None],
        moments: Moments,
        watched: list[Tensor],
        remaining_logging_steps: float | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``device_stats(invs, prevs, moments, watched)``; ``remaining_logging_steps`` (None:
        unknown) is what ``compile=None`` weighs the compilation against."""
        if self._compiles(remaining_logging_steps):
            result = self._compiled(invs, prevs, moments, watched)
            if result is not None:
                return result
        start = time.perf_counter()
        result = device_stats(invs, prevs, moments, watched)
        if len(self._eager_seconds) < EAGER_SAMPLES:
            self._eager_seconds.append(time.perf_counter() - start)
        return result

    def _compiles(self, remaining: float | None) -> bool:
        if self._failed or self.compile is False:
            return False
        if self.compile is None:
            if remaining is None or len(self._eager_seconds) < EAGER_SAMPLES:
                return False
            if statistics.median(self._eager_seconds) * remaining < COMPILE_WHEN_SAVING_S:
                return False
            self.compile = True  # decided for the rest of the run
        return True

    def _compiled(
        self,
        invs: list[Tensor],
        prevs: list[Tensor | None],
        moments: Moments,
        watched: list[Tensor],
    ) -> tuple[Tensor, Tensor] | None:
        has_prev = tuple(prev is not None for prev in prevs)
        has_vhat = tuple(vhat is not None for _, vhat in moments)
        slots = [
            *invs,
            *(prev for prev in prevs if prev is not None),
            *(v for v, _ in moments),
            *(vhat for _, vhat in moments if vhat is not None),
            *watched,
        ]
        # a tensor in two slots (v is also watched state) is read once: the kernel's inputs
        # are the distinct tensors, and ``where`` says which input fills each slot
        first: dict[int, int] = {}
        where = tuple(first.setdefault(id(t), len(first)) for t in slots)
        inputs = list({where[i]: t for i, t in enumerate(slots)}.values())
        key = signature((has_prev, has_vhat, len(watched), where), inputs)
        kernel = _KERNELS.get(key)
        if kernel is None:
            n = len(invs)

            def flat_stats(*distinct: Tensor) -> tuple[Tensor, Tensor]:
                it = iter([distinct[i] for i in where])
                ins = [next(it) for _ in range(n)]
                pvs = [next(it) if has else None for has in has_prev]
                vs = [next(it) for _ in range(n)]
                moms = [(v, next(it) if has else None) for v, has in zip(vs, has_vhat, strict=True)]
                return device_stats(ins, pvs, moms, list(it))

            try:
                kernel, seconds = compile_flat(flat_stats, inputs, INDUCTOR_OPTIONS)
            except Exception as error:  # noqa: BLE001 - any failure: stay eager, say so once
                self._failed = True
                warnings.warn(
                    f"OptimizerDiagnostics: compiling the logging step failed ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}); it stays eager (the same "
                    "values, slower). compile=False silences this.",
                    stacklevel=2,
                )
                return None
            _KERNELS[key] = kernel
            self.compile_seconds += seconds
            log.info(
                "compiled the diagnostics' logging step for %d tensors in %.1f s",
                len(inputs),
                seconds,
            )
        packed, bins = kernel(*inputs)
        return packed, bins
