"""Optimizer step time against torch.optim.Adam, measured side by side.

    python benchmarks/optimizer_step.py [--quick] [--repeats 31] [--steps 3]
        [--sizes small large] [--dtypes float32 bfloat16]

Every candidate steps the same parameter shapes with the same gradients; rounds are
interleaved (candidate A, B, C, ... then again), and each sample starts after a read of a
buffer larger than the cache, so that none inherits its predecessor's cache (a step that
ran after a foreach step was 5-10% slower). ms/step is the median over rounds; a ratio
is the median of the per-round ratios, with their quartiles, because the two sides of a
per-round ratio ran seconds apart and a slow phase of a shared machine hits both. Each
optimizer here runs eager (its rule tensor by tensor, as torch's ``foreach=False``) and fused
(the same rule compiled into one kernel, ``fused=True``); torch's Adam and
Adam(amsgrad=True) run ``foreach=False``, ``foreach=True`` and ``fused=True``. Ratios are
against torch's fused step of the same run: Adam(amsgrad=True) for the AMSGrad family, plain
Adam for the rest; the eager rows also against torch's ``foreach=False`` loop.

Each candidate steps tensors of its own, and where they lie in memory moves a memory-bound step
by itself: torch's fused step on a second set of tensors of the same shapes ran 2-5% off the
first, persistently. So a ratio within a few percent of 1.0 here does not separate two codes;
``fused_step_split.py`` compares our fused AMSGrad with torch's on the same tensors.

The GB/s column is the fused step's memory traffic (each buffer it must read or write, once)
over its time; the ``copy`` row is ``dst.copy_(src)`` moving the same bytes (read + write),
the machine's practical ceiling. Compile seconds are the first fused step's; the kernel for
identical flags and shapes is shared (Adam, AdamNC and GenericAdam in the paper's mode use one
kernel), so a later row may show 0. The run compiles into a new inductor cache folder (cold
compiles; ``--warm-cache`` uses the usual one), and at the end a second process compiles the
fused AMSGrad step again from that folder to show what inductor's caches save.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lit_amsgrad.optim import Adam, AdamNC, AdaShift, AMSGrad, GenericAdam

SIZES = {  # name: (number of tensors, elements per tensor)
    "small": (10, 175_000),  # 1.75M parameters
    "large": (60, 166_667),  # 10M parameters
}
#: read before every sample so that no candidate inherits the previous one's cache: a
#: candidate that ran after a foreach step (which leaves its temporaries dirty in the cache)
#: took 5-10% longer, whichever it was. Reading, not writing, leaves only clean lines.
FLUSH_BYTES = 128 * 2**20
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
        # p, g, m, the window slot g_{t-n} read; p, m, the slot written (v, the active mask
        # and beta_2^k are one value per tensor)
        ("AdaShift", AdaShift, {}, 7, False, 3),
    ]
    if quick:
        ours = [row for row in ours if row[0] in ("AMSGrad (paper)", "Adam (paper)", "AdaShift")]
    for name, cls, kwargs, buffers, family, warmup in ours:
        modes = {"eager": {}, "fused": {"fused": True}}
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


@dataclass
class Measured:
    """Seconds per step of every candidate, round by round (rounds are interleaved)."""

    samples: dict[str, list[float]]
    compile_seconds: dict[str, float]
    copy_bytes: int

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, name: str, reference: str) -> tuple[float, float, float]:
        """Median and quartiles of the per-round ratio name / reference: each round's pair
        ran back to back, so a slow phase of the machine hits both sides of a ratio."""
        ratios = [a / b for a, b in zip(self.samples[name], self.samples[reference], strict=True)]
        q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        return median, q1, q3


def bench(
    size: str, dtype: torch.dtype, rows: list[Candidate], repeats: int, steps: int
) -> Measured:
    """Seconds per step of every candidate and of the copy, over interleaved rounds."""
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
    flush = torch.ones(FLUSH_BYTES // 4)
    for _ in range(repeats):
        for name, step in setups.items():
            flush.sum()  # each sample starts from the same cache state (see FLUSH_BYTES)
            samples[name].append(time_steps(step, steps))
    return Measured(samples, compile_seconds, total_bytes)


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
    measured = bench(size, dtype, rows, repeats, steps)
    loop = "torch Adam(amsgrad) foreach=False"
    print(
        f"\n{size}: {n_tensors * numel / 1e6:.2f}M parameters in {n_tensors} tensors, "
        f"{str(dtype).removeprefix('torch.')}"
    )
    print(
        f"{'candidate':36s} {'ms/step':>8s} {'vs loop':>8s} {'vs fused':>9s} "
        f"{'(quartiles)':>13s} {'GB/s':>6s} {'compile s':>9s}"
    )
    for row in rows:
        seconds = measured.median(row.name)
        fused = TORCH_AMSGRAD_FUSED if row.amsgrad_family else TORCH_ADAM_FUSED
        vs_loop = measured.ratio(row.name, loop)[0]
        vs_fused, q1, q3 = measured.ratio(row.name, fused)
        bandwidth = ""
        if row.name.endswith("fused"):
            bandwidth = f"{row.buffers * n_tensors * numel * dtype.itemsize / seconds / 1e9:6.1f}"
        compiled = measured.compile_seconds
        compile_s = f"{compiled[row.name]:9.1f}" if row.name in compiled else ""
        print(
            f"{row.name:36s} {seconds * 1e3:8.2f} {vs_loop:7.2f}x {vs_fused:8.2f}x "
            f"{f'[{q1:.2f}-{q3:.2f}]':>13s} {bandwidth:>6s} {compile_s}"
        )
    copy_s = measured.median("copy")
    print(f"{'copy (same bytes as 9 buffers)':36s} {copy_s * 1e3:8.2f} {'':8s} {'':9s} "
          f"{'':13s} {measured.copy_bytes / copy_s / 1e9:6.1f}")  # fmt: skip


def report_host_overhead(repeats: int) -> None:
    """The step's time outside its arithmetic: tensors of 16 elements, where the kernel is
    nothing and what remains is Python, guards or input checks, and launching."""
    print("\nhost overhead: fused steps on tensors of 16 elements, us/step")
    makers = {
        "torch Adam(amsgrad) fused": lambda p: torch.optim.Adam(p, amsgrad=True, fused=True),
        "AMSGrad (paper) fused": lambda p: AMSGrad(p, fused=True),
        "torch Adam fused": lambda p: torch.optim.Adam(p, fused=True),
        "Adam (paper) fused": lambda p: Adam(p, fused=True),
        "AdaShift fused": lambda p: AdaShift(p, fused=True),
    }
    for n_tensors in (10, 60):
        steps = {}
        for name, make in makers.items():
            opt = make(make_params(n_tensors, 16, torch.float32))
            for _ in range(12):  # AdaShift's window, then the compile
                opt.step()
            steps[name] = opt.step
        samples: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(repeats):
            for name, step in steps.items():
                samples[name].append(time_steps(step, 100))
        measured = Measured(samples, {}, 0)
        cells = []
        for name in makers:
            reference = TORCH_AMSGRAD_FUSED if "amsgrad" in name.lower() else TORCH_ADAM_FUSED
            ratio = measured.ratio(name, reference)[0]
            cells.append(f"{name} {measured.median(name) * 1e6:.0f} ({ratio:.2f}x)")
        print(f"{n_tensors} tensors: " + "; ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 optimizers, 11 rounds")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 31, quick 11)")
    parser.add_argument("--steps", type=int, default=3, help="steps per candidate and round")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="use inductor's usual cache folder (default: a new one, so compile s are cold)",
    )
    args = parser.parse_args()
    if not args.warm_cache:  # read when inductor first compiles; the child process inherits it
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="optimizer_step_")
    repeats = args.repeats or (11 if args.quick else 31)
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
    report_host_overhead(repeats)
    print(f"\nfused AMSGrad compile in a second process (FX graph cache warm): "
          f"{second_process_compile()} s")  # fmt: skip
    print(f"total {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
