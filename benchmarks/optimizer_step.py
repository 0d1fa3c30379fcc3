"""Optimizer step time against torch.optim.Adam(amsgrad=True), measured side by side.

    python benchmarks/optimizer_step.py [--repeats 7] [--steps 20] [--sizes small large]

Every candidate steps the same parameter shapes with the same gradients; rounds are
interleaved (candidate A, B, C, ... then again) and the median over rounds is reported, so
machine noise hits all candidates alike. Ratios are against torch's per-tensor loop
(``foreach=False``) and against torch's ``fused=True`` step of the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from lit_amsgrad.optim import Adam, AdamNC, AdaShift, AMSGrad, GenericAdam

SIZES = {  # name: (number of tensors, elements per tensor)
    "small": (10, 175_000),  # 1.75M parameters
    "large": (60, 166_667),  # 10M parameters
}


def candidates() -> dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]]:
    torch_adam = torch.optim.Adam
    return {
        "torch Adam(amsgrad) foreach=False": lambda p: torch_adam(p, amsgrad=True, foreach=False),
        "torch Adam(amsgrad) foreach=True": lambda p: torch_adam(p, amsgrad=True, foreach=True),
        "torch Adam(amsgrad) fused=True": lambda p: torch_adam(p, amsgrad=True, fused=True),
        "AMSGrad (paper) eager": lambda p: AMSGrad(p),
        "AMSGrad (paper) foreach": lambda p: AMSGrad(p, foreach=True),
        "AMSGrad (pytorch) eager": lambda p: AMSGrad(p, bias_correction="pytorch"),
        "AMSGrad (max_debiased) eager": lambda p: AMSGrad(p, bias_correction="max_debiased"),
        "Adam (paper) eager": lambda p: Adam(p),
        "AdamNC eager": lambda p: AdamNC(p, betas=(0.9,)),
        "GenericAdam eager": lambda p: GenericAdam(p, betas=(0.9,)),
        "AdaShift eager": lambda p: AdaShift(p),
    }


def make_params(n_tensors: int, numel: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for _ in range(n_tensors):
        p = torch.randn(numel, generator=gen).requires_grad_(True)
        p.grad = torch.randn(numel, generator=gen)
        params.append(p)
    return params


def time_steps(opt: torch.optim.Optimizer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps


def bench(size: str, repeats: int, steps: int) -> dict[str, float]:
    n_tensors, numel = SIZES[size]
    setups = {}
    for name, factory in candidates().items():
        params = make_params(n_tensors, numel)
        opt = factory(params)
        for _ in range(3):  # warm-up: state allocation, first-call overheads
            opt.step()
        setups[name] = opt
    samples: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(repeats):
        for name, opt in setups.items():
            samples[name].append(time_steps(opt, steps))
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    for size in args.sizes:
        n_tensors, numel = SIZES[size]
        medians = bench(size, args.repeats, args.steps)
        loop = medians["torch Adam(amsgrad) foreach=False"]
        fused = medians["torch Adam(amsgrad) fused=True"]
        print(f"\n{size}: {n_tensors * numel / 1e6:.2f}M parameters in {n_tensors} tensors")
        print(f"{'candidate':38s} {'ms/step':>9s} {'vs loop':>8s} {'vs fused':>9s}")
        for name, seconds in medians.items():
            print(f"{name:38s} {seconds * 1e3:9.2f} {seconds / loop:7.2f}x {seconds / fused:8.2f}x")


if __name__ == "__main__":
    main()
