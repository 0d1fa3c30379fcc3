"""Watches one optimizer through a step post-hook, independently of Lightning.

Hooking the optimizer, not the training loop, means every real step is seen, also when a
LightningModule takes many optimizer steps per ``training_step`` (manual optimization), and
the same probe drives plain loops (``lit_amsgrad.diagnostics_figure``) and tests.

Steps are counted per optimizer; step c is a logging step when c % log_every_n_steps == 0.
Gamma_c needs inverse_lr of step c-1: the post-hook of step c-1 keeps it (only when step c
logs) and the post-hook of step c uses and drops it. Taking it right after step c-1 instead of
just before step c sees the same optimizer state, but with the learning rate step c-1 really
used: a scheduler may change ``lr`` in between.

Two optional extras ride in the same host transfer at logging steps: ``<prefix>/nonfinite``
(NaN/inf entries over parameters, gradients and state) and ``<prefix>/replica_max_abs_diff``
(DDP replicas' disagreement, see ``callbacks.replicas``). A probe without ``on_metrics`` only
takes part in the replica check's collective: what the ranks other than zero run.

A logging step's device work is ``callbacks.stats.device_stats`` (eager, or compiled when
``compile`` says so: ``callbacks.compiled_stats``), its host work the reduction of the
transferred values to metrics (``callbacks.stats.StepReader``). With ``flush_every_s`` > 0
the device work still runs at every logging step, but its results wait on the device and the
host reads them in batches (``flush``): once ``flush_every_s`` seconds have passed since the
oldest waiting step, or ``MAX_PENDING`` steps wait. A batch is the same few dozen numpy
calls over all of its steps, one transfer and one device sync: reading 64 logging steps cost
the host about 5x what reading one does (372 against 88 us warm on logistic regression). The sinks
get the same metrics at the same step numbers, in order, only later; nothing waiting is
dropped: ``detach`` and ``log_final`` flush, and the callback flushes before
validation, at checkpoints and on exceptions.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from callbacks.adapters import MomentView, moments_of, moments_program_of
from callbacks.compiled_stats import DeviceStats, Snapshot
from callbacks.nonfinite import watched_tensors
from callbacks.replicas import AllReduceMax, replica_spread, state_checksums
from callbacks.stats import StepReader, StepResult, bin_edges, reader_for, to_host

MetricsSink = Callable[[dict[str, float], int], None]
HistogramSink = Callable[[dict[str, tuple[np.ndarray, np.ndarray]], int], None]

#: logging steps that may wait for the host at most, whatever ``flush_every_s`` says: their
#: results are device memory (the histogram counts: parameters x 256 integers each)
MAX_PENDING = 64


class Pending(NamedTuple):
    """A logging step computed on the device and not yet read on the host."""

    step: int
    log: bool  # its metrics go to on_metrics
    hist: bool  # its histograms go to on_histograms
    packed: Tensor
    extras: list[Tensor]
    counts: Tensor
    reader: StepReader  # which also names the rows (``reader.suffixes``)


class OptimizerProbe:
    """Computes the diagnostics after logging steps of one optimizer and hands them to sinks.

    ``on_metrics(metrics, step)`` gets the scalars, ``on_histograms({key: (counts, edges)},
    step)`` the log10 effective-step histograms (edges in log10, empty outer bins trimmed).
    ``flush_every_s``: 0 hands each logging step to the sinks as it happens; more lets the
    steps wait on the device and reads them in batches, at most that many seconds late (see
    the module docstring).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        view: MomentView,
        names: dict[int, str],
        on_metrics: MetricsSink | None,
        on_histograms: HistogramSink | None = None,
        log_every_n_steps: int = 50,
        histogram_every_n_steps: int = 0,
        per_parameter: bool = True,
        prefix: str = "diag",
        hist_prefix: str = "diag_hist",
        step: int = 0,
        count_nonfinite: bool = False,
        replica_all_reduce_max: AllReduceMax | None = None,
        compile: bool | None = None,
        expected_steps: int | None = None,
        flush_every_s: float = 0.0,
    ) -> None:
        self.optimizer, self.view, self.names = optimizer, view, names
        self.on_metrics, self.on_histograms = on_metrics, on_histograms
        self.log_every, self.hist_every = log_every_n_steps, histogram_every_n_steps
        self.per_parameter, self.prefix, self.hist_prefix = per_parameter, prefix, hist_prefix
        self.step = step
        self.count_nonfinite, self.replica_all_reduce_max = count_nonfinite, replica_all_reduce_max
        self.expected_steps = expected_steps
        self.device_stats = DeviceStats(compile)
        self._prev: Snapshot | None = None
        self._vhat_means: dict[str, float] = {}
        self._handle = None
        self.flush_every_s = flush_every_s
        self._pending: list[Pending] = []
        self._suffix_cache: tuple[tuple[int, ...], tuple[str, ...]] = ((), ())
        self._oldest = self._last_pended = -math.inf  # monotonic times: of the oldest waiting

    def attach(self) -> OptimizerProbe:
        if self._handle is None:
            self._handle = self.optimizer.register_step_post_hook(self._after_step)
        return self

    def detach(self) -> None:
        """Stop watching; the logging steps still waiting are read first."""
        self.flush()
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._prev = None

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.step += 1
        log = self.step % self.log_every == 0
        if self.on_metrics is None:  # another rank: only the replica check's collective
            if log and self.replica_all_reduce_max is not None:
                with torch.no_grad():
                    self._extras()
            return
        hist = (
            self.on_histograms is not None
            and self.hist_every > 0
            and self.step % self.hist_every == 0
        )
        keep = (self.step + 1) % self.log_every == 0
        if log or hist or keep:
            with torch.no_grad():
                self._observe(log, hist, keep)
        else:
            self._prev = None

    def log_final(self) -> None:
        """Log the last step if it was not a logging step (a run shorter than the cadence
        logs its end too). No Gamma (no step before it was kept) and no replica check (its
        collective would wait for ranks that do not call this)."""
        if self.on_metrics is None or self.step == 0 or self.step % self.log_every == 0:
            return
        all_reduce, self.replica_all_reduce_max = self.replica_all_reduce_max, None
        self._prev = None
        try:
            with torch.no_grad():
                self._observe(log=True, hist=False, keep=False)
        finally:
            self.replica_all_reduce_max = all_reduce
        self.flush()

    def flush(self) -> None:
        """Read the logging steps waiting on the device (one transfer per layout) and hand
        them to the sinks in step order."""
        pending, self._pending = self._pending, []
        for reader, run in itertools.groupby(pending, key=lambda entry: entry.reader):
            run = list(run)
            values, counts = to_host(
                [e.packed for e in run], [e.extras for e in run], [e.counts for e in run]
            )
            for entry, step in zip(run, reader(values, counts), strict=True):
                if entry.log:
                    metrics = self._with_growth(step, reader.suffixes)
                    metrics.update(step.extras)
                    self.on_metrics(metrics, entry.step)
                if entry.hist and math.isfinite(step.lo) and math.isfinite(step.hi):  # NaN
                    self.on_histograms(self._histograms(step, reader.suffixes), entry.step)

    def _params(self) -> list[Tensor]:
        state = self.optimizer.state
        return [p for g in self.optimizer.param_groups for p in g["params"] if state.get(p)]

    def _extras(self) -> dict[str, Tensor]:
        """The logging step's replica check, a 0-d device tensor; its collective is here,
        before anything that could return early, so every rank reaches it at the same steps."""
        if self.replica_all_reduce_max is None:
            return {}
        spread = replica_spread(state_checksums(self.optimizer), self.replica_all_reduce_max)
        return {f"{self.prefix}/replica_max_abs_diff": spread}

    def _observe(self, log: bool, hist: bool, keep: bool) -> None:
        extras = self._extras() if log else {}
        params = self._params()
        if not params:
            return
        ids = tuple(map(id, params))
        if log or hist:
            count = self.count_nonfinite and log
            watched = (
                [t for _, _, t in watched_tensors(self.optimizer, self.names)] if count else []
            )
            packed, counts, snapshot, layout = self.device_stats(
                lambda: self._moments(params),
                lambda: moments_program_of(self.view, params),
                ids,
                self._prev if log else None,
                watched,
                keep,
                self._remaining_logging_steps(),
            )
            suffixes = self._suffixes(ids, params)
            reader = reader_for(layout, bool(watched), tuple(extras), self.prefix, suffixes)
            self._pending.append(
                Pending(self.step, log, hist, packed, list(extras.values()), counts, reader)
            )
            self._flush_when_due()
        elif keep:
            snapshot = self.device_stats.snapshot(
                lambda: self._moments(params), lambda: moments_program_of(self.view, params), ids
            )
        self._prev = snapshot if keep else None

    def _flush_when_due(self) -> None:
        """Flush unless the next logging step, as far after this one as this one came after
        the last, would still be within ``flush_every_s`` of the oldest waiting step: fast
        steps are read in batches, slow ones (or the first) at once."""
        now = time.monotonic()
        interval, self._last_pended = now - self._last_pended, now
        if len(self._pending) == 1:
            self._oldest = now
        if len(self._pending) >= MAX_PENDING or now - self._oldest + interval >= self.flush_every_s:
            self.flush()

    def _moments(self, params: list[Tensor]) -> tuple[list[Tensor], list]:
        invs, moments = moments_of(self.view, params)
        return [self._own(p, inv) for p, inv in zip(params, invs, strict=True)], moments

    def _remaining_logging_steps(self) -> float | None:
        if self.expected_steps is None:
            return None
        return max(self.expected_steps - self.step, 0) / self.log_every

    def _own(self, p: Tensor, inv: Tensor) -> Tensor:
        """inverse_lr must not alias optimizer state, or the snapshot would move with it."""
        state_ptrs = {
            t.data_ptr() for t in self.optimizer.state[p].values() if isinstance(t, Tensor)
        }
        return inv.clone() if inv.data_ptr() in state_ptrs else inv

    def _suffixes(self, ids: tuple[int, ...], params: list[Tensor]) -> tuple[str, ...]:
        """The metric key suffix of each row: "" for all coordinates, then "/<name>" (kept
        for the last ``ids``: the parameters rarely change)."""
        if not self.per_parameter:
            return ("",)
        if self._suffix_cache[0] != ids:
            names = [self.names.get(id(p), f"param{i}") for i, p in enumerate(params)]
            self._suffix_cache = (ids, ("", *(f"/{name}" for name in names)))
        return self._suffix_cache[1]

    def _with_growth(self, step: StepResult, suffixes: tuple[str, ...]) -> dict[str, float]:
        """The step's metrics with vhat_growth, each row's mean vhat over the last logged."""
        metrics = step.metrics
        for suffix, mean in zip(suffixes, step.means, strict=True):
            if mean is None:
                continue
            before = self._vhat_means.get(suffix)
            if before is not None and before > 0:
                metrics[f"{self.prefix}/vhat_growth{suffix}"] = mean / before
            self._vhat_means[suffix] = mean
        return metrics

    def _histograms(self, step: StepResult, suffixes: tuple[str, ...]) -> dict:
        edges = bin_edges(step.lo, step.hi)
        out = {}
        for suffix, counts in zip(suffixes, step.rows(self.per_parameter), strict=True):
            nonzero = np.flatnonzero(counts)
            first, last = (nonzero[0], nonzero[-1]) if nonzero.size else (0, 0)
            out[f"{self.hist_prefix}/eff_lr{suffix}"] = (
                counts[first : last + 1],
                edges[first : last + 2],
            )
        return out
