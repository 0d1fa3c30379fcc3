"""Optimizer step time against torch.optim.Adam, measured side by side.

    python benchmarks/optimizer_step.py [--quick] [--repeats 11] [--steps 2]
        [--sizes small large] [--dtypes float32 bfloat16]

Every candidate steps the same parameter shapes with the same gradients; rounds are
interleaved (candidate A, B, C, ... then again) and the median over rounds is reported, so
machine noise hits all candidates alike. Each optimizer here runs eager (per-tensor loop),
foreach and fused (one compiled kernel, ``fused=True``); torch's Adam and Adam(amsgrad=True)
run ``foreach=False``, ``foreach=True`` and ``fused=True``. Ratios are against torch's fused
step of the same run: Adam(amsgrad=True) for the AMSGrad family, plain Adam for the rest.
AdaShift's ``foreach`` is its eager loop, so it has no row of its own.

The GB/s column is the fused step's memory traffic (each buffer it must read or write, once)
over its time; the ``copy`` row is ``dst.copy_(src)`` moving the same bytes (read + write),
the machine's practical ceiling. Compile seconds are the first fused step's; the kernel for
identical flags and shapes is shared (Adam, AdamNC and GenericAdam in the paper's mode use one
kernel), so a later row may show 0. At the end a second process compiles the fused AMSGrad
step again to show what inductor's FX graph cache saves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lit_amsgrad.optim import Adam, AdamNC, AdaShift, AMSGrad, GenericAdam

SIZES = {  # name: (number of tensors, elements per tensor)
    "small": (10, 175_000),  # 1.75M parameters
    "large": (60, 166_667),  # 10M parameters
}
TORCH_AMSGRAD_FUSED = "torch Adam(amsgrad) fused"
TORCH_ADAM_FUSED = "torch Adam fused"


@dataclass(frozen=True)
class Candidate:
    name: str
    make: Callable[[list[torch.Tensor]], torch.optim.Optimizer]
    buffers: int  # full-size tensors the step must read plus those it must write
    amsgrad_family: bool
    warmup: int = 3  # steps before timing: state allocation, compile, AdaShift's window


def candidates(quick: bool) -> list[Candidate]:
    torch_adam = torch.optim.Adam
    rows = []
    for mode, kwargs in (("foreach=False", {"foreach": False}), ("foreach=True", {"foreach": True}),
                         ("fused", {"fused": True})):  # fmt: skip
        rows.append(
            Candidate(f"torch Adam {mode}", lambda p, k=kwargs: torch_adam(p, **k), 7, False)
        )
        rows.append(
            Candidate(
                f"torch Adam(amsgrad) {mode}",
                lambda p, k=kwargs: torch_adam(p, amsgrad=True, **k),
                9,
                True,
            )  # fmt: skip
        )
    ours = [  # name, class, kwargs, buffers (p, g, m, v read; p, m, v written; + v_hat twice)
        ("AMSGrad (paper)", AMSGrad, {}, 9, True, 3),
        ("AMSGrad (pytorch)", AMSGrad, {"bias_correction": "pytorch"}, 9, True, 3),
        ("AMSGrad (max_debiased)", AMSGrad, {"bias_correction": "max_debiased"}, 9, True, 3),
        ("Adam (paper)", Adam, {}, 7, False, 3),
        ("AdamNC", AdamNC, {"betas": (0.9,)}, 7, False, 3),
        ("GenericAdam", GenericAdam, {"betas": (0.9,)}, 7, False, 3),
        # p, g, m, the window slot g_{t-n} read; p, m, the slot written (fused: recurrence)
        ("AdaShift", AdaShift, {}, 7, False, 12),
    ]
    if quick:
        ours = [row for row in ours if row[0] in ("AMSGrad (paper)", "Adam (paper)", "AdaShift")]
    for name, cls, kwargs, buffers, family, warmup in ours:
        modes = {"eager": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
        if cls is AdaShift:
            del modes["foreach"]
        for mode, extra in modes.items():
            rows.append(
                Candidate(
                    f"{name} {mode}",
                    lambda p, c=cls, k={**kwargs, **extra}: c(p, **k),
                    buffers,
                    family,
                    warmup,
                )  # fmt: skip
            )
    return rows


def make_params(n_tensors: int, numel: int, dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for _ in range(n_tensors):
        p = torch.randn(numel, generator=gen).to(dtype).requires_grad_(True)
        p.grad = torch.randn(numel, generator=gen).to(dtype)
        params.append(p)
    return params


def time_steps(step: Callable[[], object], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def bench(
    size: str, dtype: torch.dtype, rows: list[Candidate], repeats: int, steps: int
) -> tuple[dict[str, float], dict[str, float], int]:
    """Median seconds per step of every candidate and of the copy; compile seconds."""
    n_tensors, numel = SIZES[size]
    setups: dict[str, Callable[[], object]] = {}
    compile_seconds = {}
    for row in rows:
        opt = row.make(make_params(n_tensors, numel, dtype))
        for _ in range(row.warmup):
            opt.step()
        setups[row.name] = opt.step
        if hasattr(opt, "compile_seconds") and row.name.endswith("fused"):
            compile_seconds[row.name] = opt.compile_seconds
    # the copy moves as many bytes as torch's fused AMSGrad step: 9 buffers, read + write
    total_bytes = 9 * n_tensors * numel * dtype.itemsize
    src = torch.randn(total_bytes // 2 // dtype.itemsize).to(dtype)
    dst = torch.empty_like(src)
    setups["copy"] = lambda: dst.copy_(src)
    samples: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(repeats):
        for name, step in setups.items():
            samples[name].append(time_steps(step, steps))
    return {name: statistics.median(s) for name, s in samples.items()}, compile_seconds, total_bytes


def second_process_compile() -> str:
    """Compile seconds of the fused AMSGrad step in a fresh process (FX graph cache warm)."""
    code = (
        "import torch; from lit_amsgrad.optim import AMSGrad\n"
        f"ps = [torch.randn({SIZES['small'][1]}).requires_grad_(True) for _ in range({SIZES['small'][0]})]\n"
        "for p in ps: p.grad = torch.randn_like(p)\n"
        "opt = AMSGrad(ps, fused=True); opt.step(); print(f'{opt.compile_seconds:.1f}')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return result.stdout.strip() or result.stderr.strip()[-500:]


def report(size: str, dtype: torch.dtype, rows: list[Candidate], repeats: int, steps: int) -> None:
    n_tensors, numel = SIZES[size]
    medians, compiled, copy_bytes = bench(size, dtype, rows, repeats, steps)
    loop = medians["torch Adam(amsgrad) foreach=False"]
    print(
        f"\n{size}: {n_tensors * numel / 1e6:.2f}M parameters in {n_tensors} tensors, "
        f"{str(dtype).removeprefix('torch.')}"
    )
    print(
        f"{'candidate':36s} {'ms/step':>8s} {'vs loop':>8s} {'vs fused':>9s} "
        f"{'GB/s':>6s} {'compile s':>9s}"
    )
    for row in rows:
        seconds = medians[row.name]
        fused = medians[TORCH_AMSGRAD_FUSED if row.amsgrad_family else TORCH_ADAM_FUSED]
        bandwidth = ""
        if row.name.endswith("fused"):
            bandwidth = f"{row.buffers * n_tensors * numel * dtype.itemsize / seconds / 1e9:6.1f}"
        compile_s = f"{compiled[row.name]:9.1f}" if row.name in compiled else ""
        print(
            f"{row.name:36s} {seconds * 1e3:8.2f} {seconds / loop:7.2f}x "
            f"{seconds / fused:8.2f}x {bandwidth:>6s} {compile_s}"
        )
    copy_s = medians["copy"]
    print(f"{'copy (same bytes as 9 buffers)':36s} {copy_s * 1e3:8.2f} {'':8s} {'':9s} "
          f"{copy_bytes / copy_s / 1e9:6.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 optimizers, 5 rounds")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 11, quick 5)")
    parser.add_argument("--steps", type=int, default=2, help="steps per candidate and round")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 11)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; "
        f"median of {repeats} interleaved rounds of {args.steps} steps; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    rows = candidates(args.quick)
    start = time.perf_counter()
    for size in args.sizes:
        for dtype in args.dtypes:
            report(size, getattr(torch, dtype), rows, repeats, args.steps)
    print(f"\nfused AMSGrad compile in a second process (FX graph cache warm): "
          f"{second_process_compile()} s")  # fmt: skip
    print(f"total {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
