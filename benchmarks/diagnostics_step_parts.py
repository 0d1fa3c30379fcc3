"""Where a compiled logging step's time goes: its parts timed one by one, in one process.

    python benchmarks/diagnostics_step_parts.py [--nets logreg mlp] [--rounds 9 --calls 200]

The same set-up as ``diagnostics_logging_step.py`` (a network, AMSGrad after a few real steps,
the probe at ``log_every_n_steps=1`` with the NaN count, compiled with the moments in the
kernel), then each part of the probe's post-step hook called on its own, round after round
(medians printed): the whole hook with the read of its own logging step (what a probe with
``flush_every_s=0`` pays); inside the device side, the optimizer's ``moments_program``, the
kernel call (inductor's wrappers included; and the same kernel compiled at inductor's own
vector width, which ``compiled_stats.inductor_options`` replaces on AVX-512; and a floor: a
kernel that only reads the same inputs once and writes the kept inverse_lr), the dedupe of
the kernel's inputs and their cache key; then the host's reading (``to_host`` and ``StepReader``) of one logging step and of a
full batch of them (``flush_every_s`` > 0 reads up to ``MAX_PENDING`` at once). A
cProfile of the same hook inflates the many small Python calls about threefold and misleads;
these are plain wall-clock medians. Each part called alone runs with warm caches, so the parts
add up to less than the whole hook (about two thirds of it on logistic regression). It reads
internals (``compiled_stats._KERNELS``) on purpose: it is a profile, not an API.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from diagnostics_logging_step import probes
from torch import Tensor

from callbacks import compiled_stats, stats
from callbacks.adapters import moments_program_of
from callbacks.nonfinite import watched_tensors
from callbacks.probe import MAX_PENDING
from lit_amsgrad.compiled import compile_flat, signature


def parts(net: str) -> dict[str, Callable[[], object]]:
    made, opt = probes(net)
    probe = made["compiled, moments in the kernel"]
    with torch.no_grad():
        for _ in range(20):  # compiles, and leaves a snapshot for Gamma
            probe._after_step(opt, (), {})
    params = probe._params()
    ids = tuple(map(id, params))
    watched = [t for _, _, t in watched_tensors(opt, probe.names)]

    def device() -> compiled_stats.Result:
        return probe.device_stats(
            lambda: probe._moments(params),
            lambda: moments_program_of(opt, params),
            ids,
            probe._prev,
            watched,
            True,
        )

    result = device()
    suffixes = probe._suffixes(ids, params)
    reader = stats.reader_for(result.layout, True, (), "diag", suffixes)

    def read(steps: int) -> Callable[[], object]:
        packed, counts = [result.packed] * steps, [result.counts] * steps
        return lambda: reader(*stats.to_host(packed, [[]] * steps, counts))

    values, host_counts = stats.to_host([result.packed], [[]], [result.counts])
    step = reader(values, host_counts)[0]
    program = moments_program_of(opt, params)
    prevs = [p for p in compiled_stats._prevs(probe._prev, True, ids) if p is not None]
    slots = [*program.tensors, *prevs, *watched]

    _, inputs = compiled_stats.distinct_inputs(slots)
    # this network's logging-step kernel: the cache holds every network's, keyed by signature
    key, (kernel, _) = next(
        (key, entry)
        for key, entry in compiled_stats._KERNELS.items()
        if key[0][0] == "stats" and key == signature(key[0], inputs)
    )

    # the same kernel at inductor's own vector width (AVX-512 where it would pick it): the
    # width ``compiled_stats.inductor_options`` replaces, timed beside it
    own_width = _at_inductors_width(key, device)

    structure = key[0]
    # the kernel returns (packed, counts, *invs): device() keeps the snapshot for Gamma
    floor = _memory_floor(inputs, [t.shape for t in kernel(*inputs)[2:]])

    def hook() -> None:
        with torch.no_grad():
            probe._after_step(opt, (), {})
        probe.flush()  # each call reads its own logging step: the unbatched host cost

    return {
        "whole post-step hook": hook,
        "device side (all of the below)": device,
        "  moments_program": lambda: moments_program_of(opt, params),
        "  kernel call": lambda: kernel(*inputs),
        "  kernel call, inductor's width": lambda: own_width(*inputs),
        "  floor: read inputs, write invs": lambda: floor(*inputs),
        "  distinct inputs": lambda: compiled_stats.distinct_inputs(slots),
        "  signature (cache key)": lambda: signature(structure, inputs),
        "tensors watched for NaN": lambda: [t for _, _, t in watched_tensors(opt, probe.names)],
        "host: read 1 logging step": read(1),
        f"host: read {MAX_PENDING} logging steps": read(MAX_PENDING),
        "  medians_from_hist, 1 step": lambda: stats.medians_from_hist(
            step.rows(True), step.lo, step.hi
        ),
    }


def _at_inductors_width(key: tuple, device: Callable[[], object]) -> Callable[..., object]:
    """The kernel cached under ``key``, compiled again without the vector width the project
    sets (the cache entry is restored afterwards; where inductor's choice is the width the
    project would set, the two are the same code)."""
    saved, bits = compiled_stats._KERNELS.pop(key), compiled_stats.VECTOR_BITS
    compiled_stats.VECTOR_BITS = None
    try:
        device()  # compiles at inductor's width under the same key
        other, _ = compiled_stats._KERNELS[key]
    finally:
        compiled_stats.VECTOR_BITS = bits
        compiled_stats._KERNELS[key] = saved
    return other


def _memory_floor(inputs: list[Tensor], kept: list[torch.Size]) -> Callable[..., object]:
    """A kernel that only reads each of the logging step's inputs once (a sum each) and writes
    tensors of the kept inverse_lr's shapes, compiled with the same options: the least any
    kernel of the same inputs and outputs can cost, to judge the real one against."""

    def fn(*xs: Tensor) -> list[Tensor]:
        total = torch.stack([x.float().sum() for x in xs]).sum()
        return [total, *(torch.full(shape, 1.0, device=total.device) * total for shape in kept)]

    floor, _ = compile_flat(fn, inputs, compiled_stats.inductor_options())
    return floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", choices=["logreg", "mlp"], default=["logreg", "mlp"])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=200, help="calls of each part per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} thread(s), {args.rounds} rounds of {args.calls} calls")
    for net in args.nets:
        timed = parts(net)
        times: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(args.rounds):
            for name, part in timed.items():
                start = time.perf_counter()
                for _ in range(args.calls):
                    part()
                times[name].append((time.perf_counter() - start) / args.calls)
        for name, values in times.items():
            print(f"{net:>7} {name:<32} {statistics.median(values) * 1e6:8.1f} us", flush=True)


if __name__ == "__main__":
    main()
