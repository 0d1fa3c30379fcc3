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
between them and blocks with no probe at all (off, before, after, off, ...). Printed: ms per
step and the probe's own hook ms per step (medians over blocks, the first three blocks left
out: they compile), the median ratio of neighbouring after and before blocks, and each
version's median ratio to the mean of the off blocks on either side of it: the
``diagnostics_overhead.py`` ratio, for both versions in one fit. The
hook times are in situ: a part of the hook costs up to 3x more after a training step than in a
warm loop (``diagnostics_step_parts.py``), so this is the figure that says what a fit pays.
A version whose probe reads logging steps in batches gets ``--flush-every-s`` (0: every step
as it happens); its flushes count in its hook time, and each block ends with one.
"""

from __future__ import annotations

import argparse
import inspect
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
ROTATION = ("off", *VERSIONS)  # blocks without a probe, then each version's


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

    def __init__(
        self, modules: dict[str, tuple[ModuleType, ModuleType]], block: int, flush_every_s: float
    ) -> None:
        self.modules, self.block, self.flush_every_s = modules, block, flush_every_s
        self.blocks: list[tuple[str, float]] = []  # (what ran, seconds per step), in order
        self.hooks: dict[str, list[float]] = {v: [] for v in VERSIONS}
        self._hook = dict.fromkeys(VERSIONS, 0.0)
        self._current: str | None = None
        self._depth = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        names = {id(p): name for name, p in pl_module.named_parameters()}

        def log(metrics: dict[str, float], step: int) -> None:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

        self.probes = {}
        for version, (probe_module, adapters) in self.modules.items():
            batched = "flush_every_s" in inspect.signature(probe_module.OptimizerProbe).parameters
            flush = {"flush_every_s": self.flush_every_s} if batched else {}
            probe = probe_module.OptimizerProbe(
                optimizer,
                adapters.moment_view(optimizer),
                names,
                on_metrics=log,
                log_every_n_steps=1,
                histogram_every_n_steps=0,
                count_nonfinite=True,
                compile=True,
                **flush,
            )
            probe._after_step = self._timed(version, probe._after_step)
            if batched:
                probe.flush = self._timed(version, probe.flush)
            self.probes[version] = probe

    def _timed(self, version: str, method):
        """``method`` with its time added to ``version``'s (a flush inside a hook once)."""

        def timed(*args) -> None:
            self._depth += 1
            start = time.perf_counter()
            try:
                method(*args)
            finally:
                self._depth -= 1
                if not self._depth:
                    self._hook[version] += time.perf_counter() - start

        return timed

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        step = trainer.global_step
        if step % self.block:
            return
        current = self._current
        if current in self.probes:  # the ending block reads what it left waiting
            getattr(self.probes[current], "flush", lambda: None)()
        now = time.perf_counter()
        if current is not None and step > len(ROTATION) * self.block:  # the first compile
            self.blocks.append((current, (now - self._start) / self.block))
            if current in self.probes:
                self.hooks[current].append((self._hook[current] - self._hook0) / self.block)
        for probe in self.probes.values():
            probe.detach()
        self._current = ROTATION[(step // self.block) % len(ROTATION)]
        if self._current in self.probes:
            self.probes[self._current].attach()
        self._start, self._hook0 = now, self._hook.get(self._current, 0.0)


def ratios(blocks: list[tuple[str, float]]) -> dict[str, list[float]]:
    """Each version's blocks over the mean of the nearest off blocks before and after it, and
    (key "after/before") each after block over the before block just before it."""
    out: dict[str, list[float]] = {v: [] for v in (*VERSIONS, "after/before")}
    offs = [i for i, (what, _) in enumerate(blocks) if what == "off"]
    for i, (what, seconds) in enumerate(blocks):
        if what == "off":
            continue
        before = [j for j in offs if j < i]
        after = [j for j in offs if j > i]
        if before and after:
            out[what].append(seconds / ((blocks[before[-1]][1] + blocks[after[0]][1]) / 2))
        if what == "after" and i and blocks[i - 1][0] == "before":
            out["after/before"].append(seconds / blocks[i - 1][1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument("--net", choices=["logreg", "mlp", "cifarnet"], default="logreg")
    parser.add_argument("--block", type=int, default=40, help="steps per block")
    parser.add_argument("--pairs", type=int, default=15, help="blocks per version")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flush-every-s", type=float, default=1.0, help="batched reading")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modules = {
        "before": import_callbacks(args.before),
        "after": (callbacks.probe, callbacks.adapters),
    }
    alternate = Alternate(modules, args.block, args.flush_every_s)
    fit(args.net, "amsgrad", 128, args.block * (3 * args.pairs + 4), [alternate])
    ms = {w: statistics.median(t for v, t in alternate.blocks if v == w) * 1e3 for w in ROTATION}
    hook = {v: statistics.median(alternate.hooks[v]) * 1e3 for v in VERSIONS}
    r = {k: (statistics.median(v), min(v), max(v)) for k, v in ratios(alternate.blocks).items()}
    print(
        f"{args.net}, blocks of {args.block} steps, {args.pairs} per version: ms/step off "
        f"{ms['off']:.3f}, before {ms['before']:.3f}, after {ms['after']:.3f}; hook ms/step "
        f"before {hook['before']:.3f}, after {hook['after']:.3f}; median ratio to off: before "
        f"{r['before'][0]:.3f}x, after {r['after'][0]:.3f}x; after/before "
        f"{r['after/before'][0]:.3f} (range {r['after/before'][1]:.3f}-{r['after/before'][2]:.3f})"
    )


if __name__ == "__main__":
    main()
