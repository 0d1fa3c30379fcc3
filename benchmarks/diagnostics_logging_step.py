"""What one logging step of the diagnostics costs, three ways side by side in one process.

    python benchmarks/diagnostics_logging_step.py [--nets logreg mlp] [--rounds 15 --calls 200]

One network and AMSGrad, a few real steps, then the probe's post-step hook timed on its own
(``log_every_n_steps=1``, NaN count on, as ``OptimizerDiagnostics`` runs it) in rounds that
alternate between: ``eager`` (compile=False), ``compiled, moments handed in`` (the optimizer's
moments computed eagerly, the statistics in one kernel: what a view without
``moments_program`` gets) and ``compiled, moments in the kernel`` (``moments_program``: the
default for every ``lit_amsgrad.optim`` optimizer). Alternating rounds cancel the drift of a
shared machine; the medians and their ratio to eager are printed. Wall-clock ratios inside a
fit are ``diagnostics_overhead.py``'s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import callbacks.probe
from callbacks.probe import OptimizerProbe
from lit_amsgrad.models.networks import build_network
from lit_amsgrad.optim import AMSGrad

WAYS = ("eager", "compiled, moments handed in", "compiled, moments in the kernel")


def probes(net: str) -> tuple[dict[str, OptimizerProbe], AMSGrad]:
    torch.manual_seed(0)
    model = build_network(net)
    opt = AMSGrad(model.parameters(), lr=3e-4)
    names = {id(p): name for name, p in model.named_parameters()}
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    made = {
        way: OptimizerProbe(
            opt,
            opt,
            names,
            on_metrics=lambda metrics, step: None,
            log_every_n_steps=1,
            count_nonfinite=True,
            compile=way != "eager",
        )
        for way in WAYS
    }
    return made, opt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", choices=["logreg", "mlp"], default=["logreg", "mlp"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200, help="hook calls per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    real_program_of = callbacks.probe.moments_program_of
    handed_in = lambda view, params: None  # noqa: E731 - as a view without moments_program
    print(f"{torch.get_num_threads()} thread(s), {args.rounds} rounds of {args.calls} calls")
    print(f"{'net':>7} {'way':>32} {'us per logging step':>20} {'vs eager':>9}")
    for net in args.nets:
        made, opt = probes(net)
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        for round_ in range(args.rounds + 1):  # round 0 compiles and warms up
            for way, probe in made.items():
                callbacks.probe.moments_program_of = (
                    handed_in if way == "compiled, moments handed in" else real_program_of
                )
                start = time.perf_counter()
                with torch.no_grad():
                    for _ in range(args.calls):
                        probe._after_step(opt, (), {})
                if round_:
                    times[way].append((time.perf_counter() - start) / args.calls)
        callbacks.probe.moments_program_of = real_program_of
        eager = statistics.median(times["eager"])
        for way in WAYS:
            median = statistics.median(times[way])
            print(f"{net:>7} {way:>32} {median * 1e6:20.0f} {median / eager:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
