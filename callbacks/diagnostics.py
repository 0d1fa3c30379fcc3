"""``OptimizerDiagnostics``: why Adam can fail, as W&B (or any logger's) charts.

One focused callback in the spirit of Lightning's ``LearningRateMonitor``: it hooks each of the
trainer's optimizers (see ``callbacks.probe``) and logs through ``trainer.loggers`` directly, so
it also sees the optimizer steps a manual-optimization ``training_step`` takes in a loop.

Two guards against failure, both about multi-GPU and long runs: ``check_replicas`` compares
the DDP replicas' optimizer state at logging steps (``callbacks.replicas``), and
``on_nonfinite="stop"`` ends training at the first NaN/inf (``callbacks.nonfinite``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from callbacks.adapters import histogram_loggers, log_histograms, moment_view
from callbacks.nonfinite import (
    LAST_GOOD,
    NonFiniteError,
    find_nonfinite,
    gradients_look_finite,
    late_nonfinite_message,
    nonfinite_message,
    watched_tensors,
)
from callbacks.probe import OptimizerProbe


class OptimizerDiagnostics(pl.Callback):
    """Logs effective step sizes, the sign of Gamma_t and the growth of vhat (docs/design.md keys).

    Scalars go to every logger every ``log_every_n_steps`` optimizer steps, W&B histograms
    ``diag_hist/eff_lr/<name>`` every ``histogram_every_n_steps`` (0 turns them off). The step
    passed to the loggers is the optimizer's own step count (the trainer's global step in
    automatic optimization); with several optimizers, optimizer i > 0 logs under ``diag_opt<i>/``.
    Under DDP the optimizer state is identical on every rank, so only rank zero computes
    (``check_replicas`` is the exception: it verifies that premise).

    ``diag/nonfinite`` (NaN/inf entries over parameters, gradients and optimizer state) rides
    in each logging step's one transfer. ``on_nonfinite="stop"`` (the shipped configs') also
    checks every step, on every rank, after backward and before the update: the sum of each
    gradient (one reduction per tensor and one host sync per step; 0.03% of a CIFARNET step
    on CPU) and, only when one of those is not finite, a precise pass over parameters,
    gradients and state that names the offenders. Parameters made non-finite by an update
    show in the next step's gradients; state that turns non-finite while the gradients stay
    finite is found at the next logging step (a precise pass over parameters and state on
    every rank, 1/log_every_n_steps of the old per-step cost). On a non-finite gradient it saves
    ``<default_root_dir>/checkpoints/last-good.ckpt`` (the state before this step; every rank
    saves, as saving is collective) and raises ``NonFiniteError``; parameters or state that an
    update itself made non-finite are caught one step later, with no last-good checkpoint (and
    not at all after the very last step). Under fp16 AMP gradients are not checked: inf
    gradients are GradScaler's normal signal, and it skips those steps itself.
    ``check_replicas=True`` makes every rank all-reduce a checksum of parameters and state at
    logging steps (DDP only: sharded strategies differ per rank by design); rank zero logs
    ``diag/replica_max_abs_diff``, 0 when the replicas agree.

    ``compile``: a logging step's device side is one function (``callbacks.stats.
    device_stats``), run eagerly or compiled into one kernel (``callbacks.compiled_stats``).
    ``None`` (default) compiles only when the fit is long enough for the kernel to repay its
    compilation (seconds); ``True`` always, ``False`` never. Both give the same values.

    ``flush_every_s``: the device side runs at every logging step, but its results may wait
    on the device and reach the loggers in batches, up to this many seconds (at most 64
    logging steps) after their step, with their own step numbers: the host's reading and one
    device sync are then paid once per batch instead of once per logging step (at
    ``log_every_n_steps=1`` on the MNIST networks, most of what the diagnostics cost). A
    logging step slower than that is read at once. Waiting steps are read before
    validation, at every checkpoint save (a resumed run's charts have no gap),
    on an exception and at the end of training; only a killed process loses them. 0 reads
    every logging step as it happens.
    """

    ON_NONFINITE = ("log", "stop")

    def __init__(
        self,
        log_every_n_steps: int = 50,
        histogram_every_n_steps: int = 500,
        per_parameter: bool = True,
        check_replicas: bool = False,
        on_nonfinite: str = "log",
        compile: bool | None = None,
        flush_every_s: float = 1.0,
    ) -> None:
        if not isinstance(log_every_n_steps, int) or log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be an int >= 1, got {log_every_n_steps!r}")
        if not isinstance(histogram_every_n_steps, int) or histogram_every_n_steps < 0:
            raise ValueError(
                f"histogram_every_n_steps must be an int >= 0, got {histogram_every_n_steps!r}"
            )
        if on_nonfinite not in self.ON_NONFINITE:
            raise ValueError(
                f"on_nonfinite must be one of {', '.join(map(repr, self.ON_NONFINITE))}, "
                f"got {on_nonfinite!r}"
            )
        if compile not in (None, True, False):
            raise ValueError(f"compile must be null (when it pays), true or false, got {compile!r}")
        if (
            isinstance(flush_every_s, bool)
            or not isinstance(flush_every_s, int | float)
            or not 0 <= flush_every_s < math.inf
        ):
            raise ValueError(
                f"flush_every_s must be a number of seconds >= 0, got {flush_every_s!r}"
            )
        self.check_replicas, self.on_nonfinite, self.compile = check_replicas, on_nonfinite, compile
        self.flush_every_s = float(flush_every_s)
        self._names: dict[int, str] = {}
        self.log_every_n_steps = log_every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.per_parameter = per_parameter
        self._probes: list[OptimizerProbe] = []
        self._checked_at = 0  # global step of the last logging-step check of the state

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._detach()
        self._checked_at = trainer.global_step
        self._names = names = {id(p): name for name, p in pl_module.named_parameters()}
        # the same decision on every rank: the replica check's collective needs them all
        if not trainer.loggers or not (trainer.is_global_zero or self.check_replicas):
            return
        zero = trainer.is_global_zero
        for i, optimizer in enumerate(trainer.optimizers):
            optimizer = getattr(optimizer, "_optimizer", optimizer)  # LightningOptimizer
            view = moment_view(optimizer)
            if view is None:
                rank_zero_warn(
                    f"OptimizerDiagnostics: {type(optimizer).__name__} has no inverse_lr/"
                    "second_moment and no adapter; it is not monitored."
                )
                continue
            probe = OptimizerProbe(
                optimizer,
                view,
                names,
                on_metrics=(lambda m, s, t=trainer: self._log(t, m, s)) if zero else None,
                on_histograms=(lambda h, s, t=trainer: log_histograms(t.loggers, h, s))
                if zero and histogram_loggers(trainer.loggers)
                else None,
                log_every_n_steps=self.log_every_n_steps,
                histogram_every_n_steps=self.histogram_every_n_steps,
                per_parameter=self.per_parameter,
                prefix="diag" if i == 0 else f"diag_opt{i}",
                hist_prefix="diag_hist" if i == 0 else f"diag_hist_opt{i}",
                step=_completed_steps(optimizer),
                count_nonfinite=True,
                replica_all_reduce_max=(
                    (lambda x, t=trainer: t.strategy.reduce(x, reduce_op="max"))
                    if self.check_replicas
                    else None
                ),
                compile=self.compile,
                expected_steps=_expected_steps(trainer),
                flush_every_s=self.flush_every_s,
            )
            self._probes.append(probe.attach())

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        """The per-step check of ``on_nonfinite="stop"``: after backward, before the update."""
        if self.on_nonfinite != "stop":
            return
        optimizer = getattr(optimizer, "_optimizer", optimizer)
        # fp16 AMP: inf gradients are how GradScaler finds its scale; it skips those steps
        grads = getattr(trainer.precision_plugin, "scaler", None) is None
        if grads and gradients_look_finite(optimizer):  # the cheap screen, every step
            return
        bad = find_nonfinite(watched_tensors(optimizer, self._names, grads=grads))
        if not bad:
            return
        saved = None
        if all(what == "grad" for _, what in bad):  # nothing updated yet: the last good state
            path = Path(trainer.default_root_dir) / "checkpoints" / LAST_GOOD
            trainer.save_checkpoint(path)  # every rank runs this hook: no collective deadlock
            saved = str(path)
        raise NonFiniteError(nonfinite_message(bad, trainer.global_step, saved))

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        """``on_nonfinite="stop"``, at each logging step on every rank: parameters and state
        that an update made non-finite while the gradients stayed finite."""
        if self.on_nonfinite != "stop":
            return
        step = trainer.global_step
        if step // self.log_every_n_steps == self._checked_at // self.log_every_n_steps:
            return
        for optimizer in trainer.optimizers:
            optimizer = getattr(optimizer, "_optimizer", optimizer)
            bad = find_nonfinite(watched_tensors(optimizer, self._names, grads=False))
            if bad:
                raise NonFiniteError(late_nonfinite_message(bad, step, self._checked_at))
        self._checked_at = step

    def flush(self) -> None:
        """Hand every logging step still waiting on the device to the loggers."""
        for probe in self._probes:
            probe.flush()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush()

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.flush()  # what the checkpoint's steps logged is logged before it exists

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        try:  # before Lightning finalizes the loggers
            self.flush()
        except Exception as error:  # noqa: BLE001 - the exception that ended the run matters more
            rank_zero_warn(
                f"OptimizerDiagnostics: the logging steps waiting to be logged were lost "
                f"({type(error).__name__}: {error})"
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for probe in self._probes:  # a run shorter than the cadence still logs its end
            probe.log_final()
        self._detach()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._detach()

    def _detach(self) -> None:
        for probe in self._probes:
            probe.detach()
        self._probes = []

    @staticmethod
    def _log(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)


def _expected_steps(trainer: pl.Trainer) -> int | None:
    """Optimizer steps the fit will take in all (None: unbounded), for ``compile=None``."""
    try:
        total = trainer.estimated_stepping_batches
    except Exception:  # noqa: BLE001 - no estimate (an iterable dataloader): decide eager
        return None
    return int(total) if math.isfinite(total) else None


def _completed_steps(optimizer: torch.optim.Optimizer) -> int:
    """Steps already taken (a resumed run), read once from torch's ``step`` state key."""
    steps = [state["step"] for state in optimizer.state.values() if "step" in state]
    return max((int(s.item() if isinstance(s, torch.Tensor) else s) for s in steps), default=0)
