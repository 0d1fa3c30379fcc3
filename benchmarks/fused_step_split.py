"""Where a fused step's time goes, on the same tensors as torch's: the kernel call against
everything around it.

    python benchmarks/fused_step_split.py [--size small|large] [--repeats 401] [--steps 1]
        [--sets 2]

Our fused AMSGrad (the paper's) against ``torch.optim.Adam(amsgrad=True, fused=True)`` on the
shapes of ``optimizer_step.py``. Both optimizers step the *same* tensors: the parameters, their
gradients and the three state buffers are shared (ours points its state at torch's), so the
two sides differ in their code only, not in where their buffers lie. That matters here: the
same torch step on a second set of tensors of the same shapes ran 2-5% faster or slower than
on the first, a persistent difference of layout that is larger than the one measured between
the two codes (the ``layout`` line prints it for ``--sets 2`` or more). ``optimizer_step.py``
gives every candidate its own tensors, as a user's optimizers have, so its ratios carry that
layout difference too.

Each sample is ``--steps`` steps after the same cache flush; the order of the candidates is
drawn anew each round (no candidate always follows another). Within each step it times the
kernel call (ours: ``fused.run``, which includes inductor's Python wrappers; torch's:
``torch._fused_adam_``) and reports the rest as host time: Python, the lists of tensors, the
step counters. A ratio is ours over torch's of the same round (the mean over the sets of
tensors), as the median with its quartiles and as the geometric mean with its 95% interval.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import time
from collections.abc import Callable

import torch
from optimizer_step import FLUSH_BYTES, SIZES, make_params

from lit_amsgrad.optim import AMSGrad, fused

TORCH, OURS = "torch Adam(amsgrad) fused", "AMSGrad (paper) fused"
SHARED_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def timed(function: Callable, spent: list[float]) -> Callable:
    """``function``, adding the seconds of each call to ``spent[0]``."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    return wrapper


def on_the_same_tensors(n_tensors: int, numel: int) -> dict[str, torch.optim.Optimizer]:
    """torch's fused AMSGrad and ours over one set of parameters, ours with torch's state
    buffers (its step counters stay its own)."""
    params = make_params(n_tensors, numel, torch.float32)
    reference = torch.optim.Adam(params, amsgrad=True, fused=True)
    ours = AMSGrad(params, fused=True)
    for opt in (reference, ours):
        opt.step()  # state allocation and the compile
    for param in params:
        for name in SHARED_STATE:
            ours.state[param][name] = reference.state[param][name]
    return {TORCH: reference, OURS: ours}


def geometric_mean(ratios: list[float]) -> tuple[float, float, float]:
    """The geometric mean of ``ratios`` and its 95% interval (normal, on the logs)."""
    logs = [math.log(r) for r in ratios]
    mean, half = statistics.mean(logs), 1.96 * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def describe(ratios: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    mean, low, high = geometric_mean(ratios)
    return f"{median:.3f}x [{q1:.3f}-{q3:.3f}], geometric mean {mean:.3f}x [{low:.3f}-{high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=401)
    parser.add_argument("--steps", type=int, default=1, help="steps per sample")
    parser.add_argument("--sets", type=int, default=2, help="sets of tensors, each shared")
    parser.add_argument("--seed", type=int, default=0, help="of the order of the candidates")
    args = parser.parse_args()
    spent = [0.0]
    # the optimizers look these up at call time: fused.run from lit_amsgrad.optim.core's
    # module `fused_kernels`, torch._fused_adam_ from torch.optim.adam
    fused.run = timed(fused.run, spent)
    torch._fused_adam_ = timed(torch._fused_adam_, spent)
    n_tensors, numel = SIZES[args.size]
    steps: dict[tuple[str, int], Callable[[], object]] = {}
    for k in range(args.sets):
        for name, opt in on_the_same_tensors(n_tensors, numel).items():
            opt.step()
            steps[name, k] = opt.step
    totals: dict[tuple[str, int], list[float]] = {key: [] for key in steps}
    kernels: dict[tuple[str, int], list[float]] = {key: [] for key in steps}
    flush = torch.ones(FLUSH_BYTES // 4)
    order = list(steps)
    rng = random.Random(args.seed)
    for _ in range(args.repeats):
        rng.shuffle(order)
        for key in order:
            flush.sum()
            spent[0] = 0.0
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[key]()
            totals[key].append((time.perf_counter() - start) / args.steps)
            kernels[key].append(spent[0] / args.steps)

    def per_round(samples: dict[tuple[str, int], list[float]], name: str) -> list[float]:
        """The mean over the sets of tensors, round by round."""
        columns = [samples[name, k] for k in range(args.sets)]
        return [statistics.mean(s) for s in zip(*columns, strict=True)]

    print(
        f"{n_tensors * numel / 1e6:.2f}M float32 parameters in {n_tensors} tensors, "
        f"{torch.get_num_threads()} threads; {args.sets} sets of tensors, each stepped by both; "
        f"{args.repeats} rounds of {args.steps} step(s) in random order; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':28s} {'step ms':>8s} {'kernel ms':>10s} {'host us':>8s}")
    rows = {}
    for name in (TORCH, OURS):
        total, kernel = per_round(totals, name), per_round(kernels, name)
        rows[name] = total, kernel
        host = [t - k for t, k in zip(total, kernel, strict=True)]
        print(
            f"{name:28s} {statistics.median(total) * 1e3:8.3f} "
            f"{statistics.median(kernel) * 1e3:10.3f} {statistics.median(host) * 1e6:8.0f}"
        )
    for label, index in (("step", 0), ("kernel call", 1)):
        ratios = [o / t for o, t in zip(rows[OURS][index], rows[TORCH][index], strict=True)]
        print(f"ours / torch, {label}: {describe(ratios)}")
    if args.sets > 1:
        ratios = [b / a for a, b in zip(totals[TORCH, 0], totals[TORCH, 1], strict=True)]
        print(f"layout: torch's step on set 1 / on set 0: {describe(ratios)}")


if __name__ == "__main__":
    main()
