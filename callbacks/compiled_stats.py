"""The diagnostics' device side, eager or compiled into one kernel: whichever pays.

``stats.device_stats`` is the one definition of what a logging step computes. Eager, it is ~30
small ops per parameter: 1-2 ms on the MNIST networks, as long as their whole training step.
Compiled (``lit_amsgrad.compiled``: make_fx + inductor, no dynamo), the same function is one
kernel that reads each tensor about once; with an optimizer that offers a ``moments_program``
(every ``lit_amsgrad.optim`` optimizer) the kernel also computes the moments from the state
(the rule's own ``denominator``), so no inverse_lr tensor is made outside it.

Compiling costs seconds (2-20 s on a 2-core CPU, less from inductor's cache), so
``compile=None`` (the default) compiles only when the run is long enough to pay it back: after
a few eager logging steps have been timed, when their cost times the logging steps still to
come exceeds ``COMPILE_WHEN_SAVING_S``. Short runs (smoke tests, the test suite) stay eager; a
long MNIST run at every step compiles. ``compile=True`` compiles at the first logging step,
``False`` never. A compilation that fails warns once and stays eager.

Compiled moments equal eager ones to float round-off, not bit for bit: torch's eager CPU
``sqrt`` is within 1 ulp (Sleef), inductor's correctly rounded. Gamma_t is a difference of two
inverse_lr snapshots, so both must come from the same path, or round-off would be counted as
sign changes: a snapshot made the other way is dropped (that logging step has no Gamma, which
happens once, when ``compile=None`` decides to compile).
"""

from __future__ import annotations

import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

from torch import Tensor

from callbacks.bits_log10 import bits_log10
from callbacks.stats import Layout, device_stats, layout_of
from lit_amsgrad.compiled import Signature, compile_flat, signature
from lit_amsgrad.optim.core import MomentsProgram

log = logging.getLogger(__name__)

#: compile once the eager logging steps still to come would cost this many seconds
COMPILE_WHEN_SAVING_S = 20.0
#: eager logging steps timed before deciding (the first one allocates, so the median)
EAGER_SAMPLES = 3
#: inductor's options: the wrapper in C++ (a Python wrapper cost as much as the kernel on the
#: MNIST networks) and no size asserts (the signature already holds every input's layout)
INDUCTOR_OPTIONS = {"cpp_wrapper": True, "size_asserts": False}
#: the vector width the CPU kernel is compiled for where inductor would pick AVX-512 (None:
#: inductor's choice everywhere; ``benchmarks/diagnostics_step_parts.py`` times both)
VECTOR_BITS: int | None = 256

Moments = list[tuple[Tensor, Tensor | None]]
Kernel = Callable[..., list[Tensor]]
#: compiled kernels by signature, shared by every probe of the process, each with the
#: (numel, has vhat) of every parameter seen while tracing it
_KERNELS: dict[Signature, tuple[Kernel, tuple[tuple[int, bool], ...]]] = {}


class Snapshot(NamedTuple):
    """inverse_lr of every parameter (by ``id``), and whether a compiled kernel made it."""

    ids: tuple[int, ...]
    invs: list[Tensor]
    in_graph: bool


class Result(NamedTuple):
    """One logging step's device work, for the probe."""

    packed: Tensor  # device_stats' packed statistics
    counts: Tensor  # and its histogram counts, BINS per parameter
    snapshot: Snapshot  # inverse_lr, fresh tensors the probe may keep for the next Gamma
    layout: Layout  # how the host reads ``packed``


class DeviceStats:
    """Runs one logging step's device work eagerly or compiled; see the module docstring."""

    def __init__(self, compile: bool | None = None) -> None:
        if compile not in (None, True, False):
            raise ValueError(f"compile must be None (when it pays), True or False, got {compile!r}")
        self.compile = compile
        self.compile_seconds = 0.0
        self._eager_seconds: list[float] = []
        self._failed = False

    def __call__(
        self,
        moments: Callable[[], tuple[list[Tensor], Moments]],
        program: Callable[[], MomentsProgram | None],
        ids: tuple[int, ...],
        prev: Snapshot | None,
        watched: list[Tensor],
        keep: bool,
        remaining_logging_steps: float | None = None,
    ) -> Result:
        """``device_stats`` of the moments that ``moments()`` returns (or that ``program()``
        computes, compiled) of the parameters ``ids``, Gamma against ``prev`` (None: no
        Gamma this step), NaN/inf counted
        over ``watched``. ``remaining_logging_steps`` (None: unknown) is what ``compile=None``
        weighs the compilation against."""
        if self._compiles(remaining_logging_steps):
            result = self._compiled(moments, program(), ids, prev, watched, keep)
            if result is not None:
                return result
        start = time.perf_counter()
        invs, moms = moments()
        prevs = _prevs(prev, False, ids)
        packed, counts = device_stats(invs, prevs, moms, watched)
        if len(self._eager_seconds) < EAGER_SAMPLES:
            self._eager_seconds.append(time.perf_counter() - start)
        return Result(packed, counts, Snapshot(ids, invs, False), layout_of(invs, prevs, moms))

    def snapshot(
        self,
        moments: Callable[[], tuple[list[Tensor], Moments]],
        program: Callable[[], MomentsProgram | None],
        ids: tuple[int, ...],
    ) -> Snapshot:
        """inverse_lr alone (the step before a logging step keeps it for Gamma), made the way
        the logging steps are made: compiled once they are."""
        if self.compile is True and not self._failed:
            prog = program()
            if prog is not None:
                entry = self._kernel(("snapshot", prog.structure), prog.tensors, _invs_of(prog))
                if entry is not None:
                    return Snapshot(ids, list(entry[0](*prog.tensors)), True)
        return Snapshot(ids, moments()[0], False)

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
        moments: Callable[[], tuple[list[Tensor], Moments]],
        program: MomentsProgram | None,
        ids: tuple[int, ...],
        prev: Snapshot | None,
        watched: list[Tensor],
        keep: bool,
    ) -> Result | None:
        given = None
        if program is None:  # moments the optimizer answers itself: evaluated here, eagerly
            given = moments()
            program = _given(*given)
        in_graph = given is None
        prevs = _prevs(prev, in_graph, ids)
        has_prev = tuple(p is not None for p in prevs)
        slots = [*program.tensors, *(p for p in prevs if p is not None), *watched]
        where, inputs = distinct_inputs(slots)
        keep = keep and in_graph  # given moments are kept as they came
        n = len(program.tensors)

        def flat_stats(*distinct: Tensor) -> tuple[list[Tensor], Moments, tuple[Tensor, ...]]:
            slots = [distinct[i] for i in where]
            invs, moms = program.evaluate(slots[:n])
            it = iter(slots[n:])
            pvs = [next(it) if has else None for has in has_prev]
            packed, counts = device_stats(invs, pvs, moms, list(it), log10=bits_log10)
            return invs, moms, ((packed, counts, *invs) if keep else (packed, counts))

        structure = ("stats", program.structure, has_prev, len(watched), keep, where)
        entry = self._kernel(structure, inputs, flat_stats)
        if entry is None:
            return None
        kernel, sizes = entry
        packed, counts, *invs = kernel(*inputs)
        layout = tuple((numel, p, v) for (numel, v), p in zip(sizes, has_prev, strict=True))
        snapshot = (
            Snapshot(ids, given[0], False) if given is not None else Snapshot(ids, invs, True)
        )
        return Result(packed, counts, snapshot, layout)

    def _kernel(
        self,
        structure: tuple,
        inputs: list[Tensor],
        fn: Callable[..., tuple[list[Tensor], Moments, tuple[Tensor, ...]]],
    ) -> tuple[Kernel, tuple[tuple[int, bool], ...]] | None:
        """The compiled ``fn`` (it returns (invs, moments, outputs); the kernel computes the
        outputs) for these inputs, from the cache or compiled now; None if compiling failed."""
        key = signature(structure, inputs)
        entry = _KERNELS.get(key)
        if entry is not None:
            return entry
        sizes: list[tuple[int, bool]] = []  # (numel, has vhat) per parameter, seen tracing

        def outputs(*flat: Tensor) -> tuple[Tensor, ...]:
            invs, moms, out = fn(*flat)
            sizes[:] = [
                (i.numel(), vhat is not None) for i, (_, vhat) in zip(invs, moms, strict=True)
            ]
            return out

        try:
            kernel, seconds = compile_flat(outputs, inputs, inductor_options())
        except Exception as error:  # noqa: BLE001 - any failure: stay eager, say so once
            self._failed = True
            warnings.warn(
                f"OptimizerDiagnostics: compiling the logging step failed ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); it stays eager (the same "
                "values to round-off, slower). compile=False silences this.",
                stacklevel=4,
            )
            return None
        self.compile_seconds += seconds
        log.info("compiled a diagnostics kernel for %d tensors in %.1f s", len(inputs), seconds)
        entry = _KERNELS[key] = (kernel, tuple(sizes))
        return entry


def inductor_options() -> dict:
    """``INDUCTOR_OPTIONS``, and 256-bit vectors where inductor would pick AVX-512.

    The logging step's kernel is a few reductions and a histogram over every coordinate. On
    an Intel AVX-512 Xeon (one this project runs on) inductor's AVX-512 code for it was 1.7x
    slower than its AVX2 code: the MLP's kernel 509 against 291 us, logistic regression's 67
    against 45 (one thread, ``benchmarks/diagnostics_step_parts.py``); in a fit, the ratio at
    every step went 1.579x -> 1.387x (MLP) and 1.349x -> 1.271x (logistic regression,
    ``diagnostics_ab.py``). Part of it is ``bits_log10``'s bit casts, which inductor writes
    element by element and gcc vectorises at 8 lanes but not at 16 (binning 78,400 floats:
    67 us at AVX2, 261 us at AVX-512); with ``torch.log10`` instead, the AVX-512 kernel was
    still 1.3x slower. It is this kernel's choice, not a rule: the fused optimizer step, a
    memory-bound update, is faster at AVX-512 (1.44 against 1.50 ms) and keeps inductor's
    width. Only the width changes, so the values agree to round-off. Elsewhere (AVX2 only,
    ARM; CUDA, where these options do not apply) and where the user chose a width
    (``ATEN_CPU_CAPABILITY``, inductor's ``cpp.simdlen``), inductor's choice stands."""
    from torch._inductor import config, cpu_vec_isa

    options = dict(INDUCTOR_OPTIONS)
    user_chose = os.environ.get("ATEN_CPU_CAPABILITY") or config.cpp.simdlen is not None
    if VECTOR_BITS is None or user_chose:
        return options  # the user chose
    try:
        picked, valid = cpu_vec_isa.pick_vec_isa(), cpu_vec_isa.valid_vec_isa_list()
    except Exception:  # noqa: BLE001 - inductor's ISA probe is internal: keep its choice
        return options
    if picked and picked.bit_width() == 512 and any(i.bit_width() == VECTOR_BITS for i in valid):
        options["cpp.simdlen"] = VECTOR_BITS
    return options


def distinct_inputs(slots: list[Tensor]) -> tuple[tuple[int, ...], list[Tensor]]:
    """A tensor in two slots (v is also watched state) is read once: the kernel's inputs are
    the distinct tensors, and ``where[i]`` is the input that fills slot i."""
    first: dict[int, int] = {}
    where = tuple(first.setdefault(id(t), len(first)) for t in slots)
    return where, list({where[i]: t for i, t in enumerate(slots)}.values())


def _prevs(prev: Snapshot | None, in_graph: bool, ids: tuple[int, ...]) -> list[Tensor | None]:
    """Each parameter's inverse_lr in the snapshot to take Gamma against (None: not in it);
    none at all when the snapshot was made the other way."""
    if prev is None or prev.in_graph != in_graph:
        return [None] * len(ids)
    if prev.ids == ids:
        return list(prev.invs)
    kept = dict(zip(prev.ids, prev.invs, strict=True))
    return [kept.get(i) for i in ids]


def _invs_of(
    program: MomentsProgram,
) -> Callable[..., tuple[list[Tensor], Moments, tuple[Tensor, ...]]]:
    def fn(*flat: Tensor) -> tuple[list[Tensor], Moments, tuple[Tensor, ...]]:
        invs, moms = program.evaluate(flat)
        return invs, moms, tuple(invs)

    return fn


def _given(invs: list[Tensor], moments: Moments) -> MomentsProgram:
    """Moments already computed, as a program that hands them through."""
    has_vhat = tuple(vhat is not None for _, vhat in moments)
    n = len(invs)

    def evaluate(flat: Sequence[Tensor]) -> tuple[list[Tensor], Moments]:
        vhats = iter(flat[2 * n :])
        vs = flat[n : 2 * n]
        pairs = [(v, next(vhats) if has else None) for v, has in zip(vs, has_vhat, strict=True)]
        return list(flat[:n]), pairs

    tensors = [*invs, *(v for v, _ in moments), *(vhat for _, vhat in moments if vhat is not None)]
    return MomentsProgram(("given", has_vhat), tensors, evaluate)
