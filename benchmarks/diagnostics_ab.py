"""Another checkout's diagnostics against this one's, alternating inside one Lightning fit.

    git worktree add /tmp/before <commit>
    python benchmarks/diagnostics_ab.py --before /tmp/before [--net logreg --block 40 --pairs 15]

A change to the logging step is worth a few percent of a training step, and this 2-core
machine's speed drifts by more than that between runs, so runs of the two versions one after
the other cannot tell them apart. Here both versions' ``callbacks`` are imported into one
process (the other checkout's under its own module objects; both run on this checkout's
``lit_amsgrad``, so a change to the optimizers is not what this compares) and each gets an
``OptimizerProbe`` on the same optimizer of one fit (``diagnostics_overhead.py``'s network,
fake resident data, CSVLogger, compiled logging step, NaN count on); blocks of steps alternate
between them. Printed: ms per step and the probe's own hook ms per step (medians over blocks,
the first two blocks left out: they compile) and the median ratio of neighbouring blocks. The
hook times are in situ: a part of the hook costs up to 3x more after a training step than in a
warm loop (``diagnostics_step_parts.py``), so this is the figure that says what a fit pays.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import lightning.pytorch as pl
import torch
from diagnostics_overhead import fit

import callbacks.adapters
import callbacks.probe

VERSIONS = ("before", "after")


def import_callbacks(checkout: Path) -> tuple[ModuleType, ModuleType]:
    """``callbacks.probe`` and ``callbacks.adapters`` of another checkout, imported beside
    this one's: the current ``callbacks`` modules step aside while the other's import."""
    ours = {k: m for k, m in sys.modules.items() if k == "callbacks" or k.startswith("callbacks.")}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(checkout))
    try:
        import callbacks.adapters as adapters
        import callbacks.probe as probe
    finally:
        sys.path.remove(str(checkout))
        for name in [k for k in sys.modules if k == "callbacks" or k.startswith("callbacks.")]:
            del sys.modules[name]
        sys.modules.update(ours)
    if not Path(probe.__file__).resolve().is_relative_to(checkout.resolve()):
        raise SystemExit(f"error: --before {checkout} has no callbacks package of its own")
    return probe, adapters


class Alternate(pl.Callback):
    """Attaches one version's probe per block of ``block`` steps, alternating, and times it."""

    def __init__(self, modules: dict[str, tuple[ModuleType, ModuleType]], block: int) -> None:
        self.modules, self.block = modules, block
        self.steps: dict[str, list[float]] = {v: [] for v in VERSIONS}
        self.hooks: dict[str, list[float]] = {v: [] for v in VERSIONS}
        self._hook = dict.fromkeys(VERSIONS, 0.0)
        self._current: str | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        names = {id(p): name for name, p in pl_module.named_parameters()}

        def log(metrics: dict[str, float], step: int) -> None:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

        self.probes = {}
        for version, (probe_module, adapters) in self.modules.items():
            probe = probe_module.OptimizerProbe(
                optimizer,
                adapters.moment_view(optimizer),
                names,
                on_metrics=log,
                log_every_n_steps=1,
                histogram_every_n_steps=0,
                count_nonfinite=True,
                compile=True,
            )
            probe._after_step = self._timed(version, probe._after_step)
            self.probes[version] = probe

    def _timed(self, version: str, hook):
        def timed(*args) -> None:
            start = time.perf_counter()
            hook(*args)
            self._hook[version] += time.perf_counter() - start

        return timed

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        step = trainer.global_step
        if step % self.block:
            return
        now = time.perf_counter()
        if self._current is not None and step > 2 * self.block:  # the first two compile
            self.steps[self._current].append((now - self._start) / self.block)
            self.hooks[self._current].append((self._hook[self._current] - self._hook0) / self.block)
        for probe in self.probes.values():
            probe.detach()
        self._current = VERSIONS[(step // self.block) % 2]
        self.probes[self._current].attach()
        self._start, self._hook0 = now, self._hook[self._current]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument("--net", choices=["logreg", "mlp", "cifarnet"], default="logreg")
    parser.add_argument("--block", type=int, default=40, help="steps per block")
    parser.add_argument("--pairs", type=int, default=15, help="blocks per version")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modules = {
        "before": import_callbacks(args.before),
        "after": (callbacks.probe, callbacks.adapters),
    }
    alternate = Alternate(modules, args.block)
    fit(args.net, "amsgrad", 128, args.block * (2 * args.pairs + 3), [alternate])
    before, after = alternate.steps["before"], alternate.steps["after"]
    ratios = [b / a for a, b in zip(before, after, strict=False)]
    hook = {v: statistics.median(alternate.hooks[v]) * 1e3 for v in VERSIONS}
    print(
        f"{args.net}, blocks of {args.block} steps, {len(ratios)} pairs: ms/step before "
        f"{statistics.median(before) * 1e3:.3f}, after {statistics.median(after) * 1e3:.3f}; "
        f"median after/before {statistics.median(ratios):.3f} (range {min(ratios):.3f}-"
        f"{max(ratios):.3f}); hook ms/step before {hook['before']:.3f}, after {hook['after']:.3f}"
    )


if __name__ == "__main__":
    main()
