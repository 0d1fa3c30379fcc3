"""Where a fused step's time goes: the kernel call against everything around it.

    python benchmarks/fused_step_split.py [--size small|large] [--repeats 41]

Our fused AMSGrad (the paper's) against ``torch.optim.Adam(amsgrad=True, fused=True)`` on the
shapes of ``optimizer_step.py``, interleaved round by round, each sample after the same cache
flush. Within each step it times the kernel call (ours: ``fused.run``, which includes
inductor's Python wrapper; torch's: ``torch._fused_adam_``) and reports the rest as host
time: Python, the lists of tensors, the step counters. The host time here is a multiple of
the one on tiny tensors (``optimizer_step.py``'s host-overhead section), because it runs on
a cache the kernel has just flushed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from optimizer_step import FLUSH_BYTES, SIZES, Measured, make_params

from lit_amsgrad.optim import AMSGrad, fused


def timed(function: Callable, spent: list[float]) -> Callable:
    """``function``, adding the seconds of each call to ``spent[0]``."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--steps", type=int, default=3, help="steps per sample")
    args = parser.parse_args()
    spent = [0.0]
    # the optimizers look these up at call time: fused.run from lit_amsgrad.optim.core's
    # module `fused_kernels`, torch._fused_adam_ from torch.optim.adam
    fused.run = timed(fused.run, spent)
    torch._fused_adam_ = timed(torch._fused_adam_, spent)
    makers = {
        "torch Adam(amsgrad) fused": lambda p: torch.optim.Adam(p, amsgrad=True, fused=True),
        "AMSGrad (paper) fused": lambda p: AMSGrad(p, fused=True),
    }
    n_tensors, numel = SIZES[args.size]
    steps = {}
    for name, make in makers.items():
        opt = make(make_params(n_tensors, numel, torch.float32))
        for _ in range(3):  # state allocation and the compile
            opt.step()
        steps[name] = opt.step
    totals: dict[str, list[float]] = {name: [] for name in steps}
    kernels: dict[str, list[float]] = {name: [] for name in steps}
    flush = torch.ones(FLUSH_BYTES // 4)
    for _ in range(args.repeats):
        for name, step in steps.items():
            flush.sum()
            spent[0] = 0.0
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            totals[name].append((time.perf_counter() - start) / args.steps)
            kernels[name].append(spent[0] / args.steps)
    reference = next(iter(makers))
    steps_measured, kernels_measured = Measured(totals, {}, 0), Measured(kernels, {}, 0)
    print(
        f"{n_tensors * numel / 1e6:.2f}M float32 parameters in {n_tensors} tensors, "
        f"{torch.get_num_threads()} threads; median of {args.repeats} interleaved rounds"
    )
    print(
        f"{'':28s} {'step ms':>8s} {'ratio':>6s} {'kernel ms':>10s} {'ratio':>6s} {'host us':>8s}"
    )
    for name in steps:
        host = [t - k for t, k in zip(totals[name], kernels[name], strict=True)]
        print(
            f"{name:28s} {steps_measured.median(name) * 1e3:8.3f} "
            f"{steps_measured.ratio(name, reference)[0]:5.2f}x "
            f"{kernels_measured.median(name) * 1e3:10.3f} "
            f"{kernels_measured.ratio(name, reference)[0]:5.2f}x "
            f"{statistics.median(host) * 1e6:8.0f}"
        )


if __name__ == "__main__":
    main()
